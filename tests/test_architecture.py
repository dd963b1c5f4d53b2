"""The package's shape, measured from its source so that it stays as documented in
docs/architecture.md: no import cycles between files, small modules and functions, private
names kept private, and each third-party library contained in its own stage.

Every import counts, also one inside a function or under ``TYPE_CHECKING``; an edge from a
file into the ``__init__`` of a package that contains it is left out (Python runs that
``__init__`` first anyway).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowrunner"
ROOT = PACKAGE.parent

MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 600
LONG_FUNCTION = 60
MAX_LONG_FUNCTIONS = 3
MAX_PRIVATE_IMPORTS = 5
# library -> (most files that may import it, the one folder they must all be in or None)
CONTAINED = {
    "aiohttp": (4, None),
    "jinja2": (None, "flowrunner/templating"),
    "sqlite3": (None, "flowrunner/state/sqlite"),
    "psycopg": (None, "flowrunner/state/postgres"),
    "opentelemetry": (None, "flowrunner/tracing"),
    "yaml": (2, None),
    "jsonschema": (2, None),
}


@dataclass
class Module:
    path: Path
    name: str  # dotted
    tree: ast.Module
    imports: set[Path] = field(default_factory=set)
    libraries: set[str] = field(default_factory=set)
    private: list[str] = field(default_factory=list)


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _file_of(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.name.split(".")
    if module.path.name != "__init__.py":
        parts.pop()
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _targets(module: Module, node: ast.AST) -> list[tuple[Path, str | None]]:
    """(file imported, name taken from it) for one import statement."""
    found: list[tuple[Path, str | None]] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = _file_of(alias.name)
            if target is not None:
                found.append((target, None))
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(module, node)
        for alias in node.names:
            sub = _file_of(f"{base}.{alias.name}")
            if sub is not None:
                found.append((sub, None))
                continue
            target = _file_of(base)
            if target is not None:
                found.append((target, alias.name))
    return found


def _read() -> dict[Path, Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        modules[path] = Module(path=path, name=_dotted(path), tree=tree)
    for module in modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                module.libraries.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                module.libraries.add((node.module or "").split(".")[0])
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target, name in _targets(module, node):
                if target == module.path:
                    continue
                if target.name == "__init__.py" and module.path.is_relative_to(target.parent):
                    continue  # a package's own __init__
                module.imports.add(target)
                if name is not None and name.startswith("_") and not name.startswith("__"):
                    module.private.append(f"{_rel(module.path)} takes {name} from {_rel(target)}")
    return modules


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _cycles(modules: dict[Path, Module]) -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan, iterative)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(modules[root].imports)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(modules[child].imports))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(_rel(member))
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def modules() -> dict[Path, Module]:
    return _read()


def test_no_import_cycles_between_files(modules):
    assert _cycles(modules) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    # the measuring code itself must be able to fail
    a = Module(path=tmp_path / "a.py", name="a", tree=ast.parse(""))
    b = Module(path=tmp_path / "b.py", name="b", tree=ast.parse(""))
    c = Module(path=tmp_path / "c.py", name="c", tree=ast.parse(""))
    a.imports, b.imports, c.imports = {b.path}, {c.path}, {a.path}
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert _cycles({a.path: a, b.path: b, c.path: c}) == [["a.py", "b.py", "c.py"]]
    finally:
        ROOT = saved


def test_top_level_modules(modules):
    top = sorted(_rel(p) for p in modules if p.parent == PACKAGE)
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_stage_folder_says_its_role(modules):
    for path, module in modules.items():
        if path.name == "__init__.py":
            assert ast.get_docstring(module.tree), f"{_rel(path)} has no docstring"


def test_module_size(modules):
    sizes = {_rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in modules}
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_long_functions(modules):
    long = [
        f"{_rel(m.path)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for m in modules.values()
        for node in ast.walk(m.tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > LONG_FUNCTION
    ]
    assert len(long) <= MAX_LONG_FUNCTIONS, long


def test_private_names_stay_private(modules):
    private = [line for m in modules.values() for line in m.private]
    assert len(private) <= MAX_PRIVATE_IMPORTS, private


@pytest.mark.parametrize("library", sorted(CONTAINED))
def test_libraries_are_contained(modules, library):
    most, folder = CONTAINED[library]
    users = sorted(_rel(m.path) for m in modules.values() if library in m.libraries)
    assert users, f"nothing imports {library}: the check would pass for the wrong reason"
    if most is not None:
        assert len(users) <= most, users
    if folder is not None:
        assert all(u.startswith(folder + "/") for u in users), users
