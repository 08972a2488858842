"""The program's modules import only downwards (docs/architecture.md, Data flow): grammars and
facts at the bottom, then the settings (reader and model, the area checkers, load()), the pure
renderers, the resource components, and BackupMx on top. A module that imports one on its own
layer or above, or a module with no layer here, fails this test."""
from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT

COMPONENTS = ROOT / "components"
LAYERS = [
    {"facts", "grammar"},
    {"postfix_grammar"},
    {"settings.reader", "settings.model"},
    {"settings.network"},  # tunnel reads its RFC 1918 blocks, dns the Always-Free storage
    {"settings.dns", "settings.mail", "settings.mtasts", "settings.access", "settings.tunnel"},
    {"settings"},  # settings/__init__.py: load() assembles the areas
    {"postfix", "wireguard"},
    {"cloudinit", "primary", "monitoring", "mtasts"},
    {"network", "relay", "dns"},
    {"backup_mx"},
]
LAYER = {name: n for n, names in enumerate(LAYERS) for name in names}


def module_name(path) -> str:
    parts = list(path.relative_to(COMPONENTS).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path) -> set[str]:
    """The components modules `path` imports, by name (relative imports resolved)."""
    here = module_name(path).split(".") if path.name != "__init__.py" else module_name(path).split(".") + ["x"]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - node.level]
            target = [*base, *(node.module.split(".") if node.module else [])]
            if node.module is None:  # from . import a, b
                found |= {".".join([*target, a.name]) for a in node.names}
            else:
                found.add(".".join(target))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("components."):
            found.add(node.module.removeprefix("components."))
    return {f for f in found if f}


MODULES = sorted(p for p in COMPONENTS.rglob("*.py") if p.name != "__init__.py" or p.parent != COMPONENTS)


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_each_module_imports_only_layers_below_its_own(path):
    name = module_name(path)
    assert name in LAYER, f"components/{path.relative_to(COMPONENTS)} has no layer in LAYERS: place it"
    upward = sorted(t for t in imports(path) if LAYER.get(t, len(LAYERS)) >= LAYER[name])
    assert not upward, f"{name} (layer {LAYER[name]}) imports {upward}, which are not below it"


def test_the_pack_imports_nothing_from_the_program():
    for path in (ROOT / "policy").rglob("*.py"):
        if ".venv" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in names if m.split(".")[0] in ("components", "offline", "lab")], path
