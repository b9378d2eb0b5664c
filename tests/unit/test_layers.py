"""The layers import one way: runtime -> (plugins, web) -> app -> (domain, store, chat); app never
imports plugins or runtime, and the lower layers import none of the upper ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import incident_bot

PACKAGE = Path(incident_bot.__file__).parent

# What each layer may import of ours (besides itself and the package root's __version__).
ALLOWED = {
    "domain": set(),
    "chat": set(),
    "store": {"domain"},
    "config": {"domain"},
    "logging": set(),
    "app": {"domain", "store", "chat", "config"},
    "plugins": {"app", "domain", "chat"},
    # ops: the operator's side (check, metrics, health, the HTTP listener); it reads the
    # running bot's parts, imported only by runtime and cli. The app reports to it through
    # app/observe.py's Protocol, so no arrow points up into ops.
    "ops": {"app", "store", "chat", "config"},
    # web: Mattermost's HTTP calls (slash command, dialogs, buttons) adapted to the use cases;
    # beside plugins, served by the ops listener, which only the runtime connects it to.
    "web": {"app", "domain", "chat", "config"},
    "runtime": {"app", "plugins", "domain", "store", "chat", "config", "ops", "web"},
}


def layer_imports(layer: str) -> set[str]:
    paths = list((PACKAGE / layer).rglob("*.py")) if (PACKAGE / layer).is_dir() else [PACKAGE / f"{layer}.py"]
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "incident_bot" and len(parts) > 1:
                    found.add(parts[1])
    return found - {layer}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_is_below_it(layer: str) -> None:
    assert layer_imports(layer) <= ALLOWED[layer], f"{layer} imports {sorted(layer_imports(layer) - ALLOWED[layer])}"


def test_every_module_belongs_to_a_layer() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert top - {"__init__", "__main__", "cli"} == set(ALLOWED)
