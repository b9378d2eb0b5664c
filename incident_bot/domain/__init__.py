"""Pure rules of the product: models, command grammar, permissions, wording. No I/O."""
