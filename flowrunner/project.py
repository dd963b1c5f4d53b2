"""Find a project, load its files and check them: the path from files to plans.

Every function here collects diagnostics instead of stopping at the first problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from flowrunner.document import Document
from flowrunner.errors import Diagnostic, InvalidProject, LoadError, UsageError
from flowrunner.plan.compiler import compile_flow, compile_project
from flowrunner.plan.types import CompiledProject, Plan
from flowrunner.source import schema
from flowrunner.source.loader import load_path
from flowrunner.source.to_model import build_flow, build_project
from flowrunner.templating import suggest

PROJECT_FILE = "flowrunner.yaml"
FLOWS_DIR = "flows"
YAML_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIX = ".test.yaml"  # flow test files, never flows


def find_root(start: Path) -> Path | None:
    """The first folder from ``start`` upwards that holds ``flowrunner.yaml``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None


def require_root(project_dir: Path | None) -> Path:
    """The project folder: ``project_dir`` if given, else found from the working dir."""
    if project_dir is not None:
        if not (project_dir / PROJECT_FILE).is_file():
            raise UsageError(f"{project_dir}: no {PROJECT_FILE} in this folder")
        return project_dir.resolve()
    root = find_root(Path.cwd())
    if root is None:
        raise UsageError(
            f"no {PROJECT_FILE} found in this folder or any parent (use --project DIR)"
        )
    return root


def display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_doc(path: Path) -> tuple[Document | None, list[Diagnostic]]:
    """Load one YAML file; a refusal becomes a diagnostic."""
    try:
        doc = load_path(path, display(path))
    except LoadError as exc:
        return None, [exc.diagnostic]
    return doc, list(doc.problems)


def check_project_doc(doc: Document, root: Path) -> tuple[CompiledProject | None, list[Diagnostic]]:
    """Schema-check, build and compile a project document."""
    diags = list(doc.problems)
    problems = _unless_reported(
        schema.check(doc.data, "project", doc.file, doc.mark, doc.key_mark), diags
    )
    diags += problems
    if any(d.severity == "error" for d in problems):
        return None, diags
    cproject, more = compile_project(build_project(doc, root))
    return cproject, diags + more


def _unless_reported(found: list[Diagnostic], loader: list[Diagnostic]) -> list[Diagnostic]:
    """Schema problems, less those at a position the loader already reported (a key
    such as ``1:`` is one problem, not a key-type and an unknown-key one)."""
    taken = {(d.line, d.column) for d in loader if d.severity == "error"}
    return [d for d in found if (d.line, d.column) not in taken]


def load_project(root: Path) -> tuple[CompiledProject | None, list[Diagnostic]]:
    """Load and check ``root/flowrunner.yaml``."""
    doc, diags = load_doc(root / PROJECT_FILE)
    if doc is None:
        return None, diags
    cproject, more = check_project_doc(doc, root)
    return cproject, more


def check_flow_doc(
    doc: Document, cproject: CompiledProject | None
) -> tuple[Plan | None, list[Diagnostic]]:
    """Schema-check a flow document, then (with a usable project) compile it."""
    diags = list(doc.problems)
    problems = _unless_reported(
        schema.check(doc.data, "flow", doc.file, doc.mark, doc.key_mark), diags
    )
    diags += problems
    if any(d.severity == "error" for d in problems) or cproject is None:
        return None, diags
    plan, more = compile_flow(build_flow(doc), cproject)
    return plan, diags + more


def flow_files(folder: Path) -> Iterator[Path]:
    """Every YAML file below ``folder``, sorted, skipping hidden folders and test files."""
    for path in sorted(folder.rglob("*")):
        if path.suffix in YAML_SUFFIXES and path.is_file() and not path.name.endswith(TEST_SUFFIX):
            parts = path.relative_to(folder).parts
            if not any(p.startswith(".") for p in parts):
                yield path


def load_plan(root: Path, ref: str) -> Plan:
    """The plan of flow ``ref`` (a path, or a flow name among the project's flows).

    Raises :class:`InvalidProject` with every diagnostic when the project or the flow
    has errors, and :class:`UsageError` when no such flow exists.
    """
    cproject, diags = load_project(root)
    path = _flow_path(root, ref)
    doc, more = load_doc(path)
    diags += more
    plan = None
    if doc is not None:
        plan, more = check_flow_doc(doc, cproject)
        diags += more
    if plan is None or any(d.severity == "error" for d in diags):
        raise InvalidProject(sorted(diags, key=Diagnostic.sort_key))
    return plan


def _flow_path(root: Path, ref: str) -> Path:
    candidate = Path(ref)
    if candidate.suffix in YAML_SUFFIXES or "/" in ref or candidate.is_file():
        if not candidate.is_file():
            raise UsageError(f"{ref}: no such flow file")
        return candidate
    for suffix in YAML_SUFFIXES:
        direct = root / FLOWS_DIR / f"{ref}{suffix}"
        if direct.is_file() and _flow_name(direct) == ref:
            return direct
    names = {}
    for path in flow_files(root / FLOWS_DIR):
        name = _flow_name(path)
        if name == ref:
            return path
        if name:
            names[name] = path
    hint = suggest(ref, names)
    extra = f" (did you mean '{hint}'?)" if hint else ""
    raise UsageError(f"no flow named '{ref}' in {display(root / FLOWS_DIR)}{extra}")


def _flow_name(path: Path) -> str | None:
    try:
        doc = load_path(path, display(path))
    except LoadError:
        return None
    data = doc.data
    name = data.get("flow") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None
