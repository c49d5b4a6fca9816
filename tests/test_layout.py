"""The package's shape: no import cycle, a CLI that only calls the public library, short command functions.

Static checks (``ast``, nothing is imported), so they hold for every import, including the ones
inside functions that a runtime check would never execute.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "anomaly_ae"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every ``anomaly_ae`` module ``path`` imports anywhere (functions, ``TYPE_CHECKING`` blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from a.b import c`` imports a.b, and a.b.c when c is a module
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "anomaly_ae":
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            # importing a.b.c also runs the sub-package a.b's __init__ (the root facade imports nothing at
            # import time: its names load on first access, checked in test_root_facade_imports_nothing)
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return found - {"anomaly_ae"}


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    modules = _modules()
    # a module's own packages are already importing when it runs: no edge back to them
    graph = {m: _imports(p, modules) - {m} - _ancestors(m) for m, p in modules.items() if m != "anomaly_ae"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_root_facade_imports_nothing_at_import_time_but_the_version():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    ours = [n.module for n in top if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("anomaly_ae")]
    assert ours == ["anomaly_ae.version"]
    for m, p in _modules().items():  # and no library module goes through the facade (the CLI is its user)
        if m.startswith(("anomaly_ae.cli", "anomaly_ae.__main__")):
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "anomaly_ae" and m != "anomaly_ae":
                pytest.fail(f"{m} imports from the package facade ({[a.name for a in node.names]})")


def test_sub_package_inits_import_no_sibling():
    for init in PACKAGE.glob("*/__init__.py"):
        if init.parent.name == "models":  # the model registry is the one sub-package with a public table
            continue
        tree = ast.parse(init.read_text(encoding="utf-8"))
        assert not [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], init


CLI_FILES = sorted((PACKAGE / "cli").glob("*.py"))


def test_no_library_module_imports_the_cli():
    """The CLI sits on top: it imports the library, never the other way round."""
    modules = _modules()
    for m, p in modules.items():
        if not m.startswith(("anomaly_ae.cli", "anomaly_ae.__main__")):
            assert not {i for i in _imports(p, modules) if i.startswith("anomaly_ae.cli")}, m


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_cli_imports_only_public_library_names(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("anomaly_ae"):
            private = [p for p in node.module.split(".") if p.startswith("_")]
            # dunders (__version__) are public by Python convention
            private += [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
            assert not private, f"{path.name}:{node.lineno} imports private {private} from {node.module}"


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_cli_command_functions_are_short(path: Path):
    """A command parses, calls one library function and prints: under 60 lines, signature included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    commands = [f for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")]
    for f in commands:
        start = min([f.lineno, *(d.lineno for d in f.decorator_list)])
        assert f.end_lineno - start + 1 < 60, f"{path.name}: {f.name} has {f.end_lineno - start + 1} lines"


def test_command_length_check_sees_long_functions(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    tree = ast.parse(f"def cmd():\n{body}\n")
    f = tree.body[0]
    assert f.end_lineno - f.lineno + 1 >= 60
