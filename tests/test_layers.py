"""The folders of store/ are its layers, and imports only go down them (issue 13.7):
domain < persistence < files < usecases < live; the domain core does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

STORE = Path(__file__).resolve().parent.parent / "store"
ORDER = ["domain", "persistence", "files", "usecases", "live"]
# what would mean I/O in the domain core
IO_MODULES = {"os", "io", "shutil", "sqlite3", "sqlalchemy", "socket", "subprocess", "fcntl"}


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["wassette_state", "store"] and len(parts) > 2 and parts[2] in ORDER:
        return parts[2]
    return None


def test_every_store_module_lives_in_a_layer() -> None:
    loose = [p.name for p in STORE.glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    assert sorted(p.name for p in STORE.iterdir() if p.is_dir() and p.name != "__pycache__") == (
        sorted([*ORDER, "migrations"])
    )


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for layer in ORDER:
        for path in sorted((STORE / layer).glob("*.py")):
            for module in imports(path):
                target = layer_of(module)
                if target is not None and ORDER.index(target) > ORDER.index(layer):
                    upward.append(f"{layer}/{path.name} imports {module}")
    assert upward == []


def test_the_domain_core_does_no_io() -> None:
    found = []
    for path in sorted((STORE / "domain").glob("*.py")):
        for module in imports(path):
            if module.split(".")[0] in IO_MODULES or module in ("builtins.open", "pathlib.Path"):
                found.append(f"{path.name}: {module}")
            if module == "pathlib" or module.startswith("pathlib."):
                found.append(f"{path.name}: {module}")
    assert found == []
