"""The domain's modules import one way: no cycles, nothing of ours outside domain/."""

import ast
from pathlib import Path

import incident_bot.domain

DOMAIN = Path(incident_bot.domain.__file__).parent


def imports_of(module: str) -> set[str]:
    tree = ast.parse((DOMAIN / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("incident_bot"):
            if node.module == "incident_bot.domain":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.removeprefix("incident_bot.domain."))
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("incident_bot")}
    return found


def test_domain_imports_only_domain_and_has_no_cycle():
    modules = {path.stem for path in DOMAIN.glob("*.py") if path.stem != "__init__"}
    graph = {module: imports_of(module) for module in modules}
    for module, targets in graph.items():
        assert targets <= modules, (module, targets - modules)

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(t == goal or (t not in seen and reaches(t, goal, seen | {t})) for t in graph[start])

    for module in modules:
        assert not reaches(module, module), f"{module} imports itself through a cycle"


def test_the_table_and_formatting_import_nothing_of_ours():
    assert imports_of("commands") == set()
    assert imports_of("format") == set()
    assert "messages" not in imports_of("rules")
