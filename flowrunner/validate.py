"""``flowrunner validate``: check files, folders, stdin or the whole project."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import BinaryIO

from flowrunner.document import Document
from flowrunner.errors import Diagnostic, LoadError, UsageError
from flowrunner.plan.types import CompiledProject
from flowrunner.project import (
    FLOWS_DIR,
    PROJECT_FILE,
    TEST_SUFFIX,
    check_flow_doc,
    check_project_doc,
    flow_files,
    load_doc,
    require_root,
)
from flowrunner.source.loader import load_stream

STDIN = "-"


def _targets(paths: list[str], root: Path) -> list[Path | str]:
    """The files to check, in order; ``-`` stays as is."""
    if not paths:
        return [root / PROJECT_FILE, *flow_files(root / FLOWS_DIR), *_test_files(root)]
    out: list[Path | str] = []
    for raw in paths:
        if raw == STDIN:
            out.append(STDIN)
            continue
        path = Path(raw)
        if path.is_dir():
            out.extend(flow_files(path))
            out.extend(_test_files(path))
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"{raw}: {_not_a_file(path)}")
    return out


def _test_files(folder: Path) -> list[Path]:
    # here: validating files named one by one never needs the test-file checker
    from flowrunner.testing.suite import test_files

    return list(test_files(folder))


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be validated: it is missing, or not a file or a folder."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "no such file or folder"
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "not a regular file or folder"
    if stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    return f"is {kind}; validate reads files and folders (pipe YAML in with '-')"


def _flow_name(doc: Document) -> str | None:
    data = doc.data
    name = data.get("flow") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def validate(paths: list[str], project_dir: Path | None, stdin: BinaryIO) -> list[Diagnostic]:
    """Every problem in the given files (or the whole project), sorted.

    The project file is always checked, since every flow depends on it.
    Raises :class:`UsageError` when there is no project or a path does not exist.
    """
    root = require_root(project_dir)
    project_doc, diags = load_doc(root / PROJECT_FILE)
    cproject: CompiledProject | None = None
    if project_doc is not None:
        cproject, diags = check_project_doc(project_doc, root)
    project_file = (root / PROJECT_FILE).resolve()
    names: dict[str, str] = {}
    seen: set[Path] = {project_file}
    for target in _targets(paths, root):
        if isinstance(target, Path):
            resolved = target.resolve()
            if resolved in seen:
                continue  # the project file, or a file named twice
            seen.add(resolved)
        doc, more = _load(target, stdin)
        diags += more
        if doc is None:
            continue
        if isinstance(target, Path) and target.name.endswith(TEST_SUFFIX):
            diags += _check_test_doc(doc, target, root, cproject)
            continue
        _, more = check_flow_doc(doc, cproject)
        diags += more
        _check_unique(doc, names, diags)
    return sorted(set(diags), key=Diagnostic.sort_key)


def _check_test_doc(
    doc: Document, path: Path, root: Path, cproject: CompiledProject | None
) -> list[Diagnostic]:
    from flowrunner.testing.suite import check_suite_doc

    return check_suite_doc(doc, path, root, cproject)[1]


def _load(target: Path | str, stdin: BinaryIO) -> tuple[Document | None, list[Diagnostic]]:
    if isinstance(target, Path):
        return load_doc(target)
    try:
        doc = load_stream(stdin, "<stdin>")
    except LoadError as exc:
        return None, [exc.diagnostic]
    return doc, list(doc.problems)


def _check_unique(doc: Document, names: dict[str, str], diags: list[Diagnostic]) -> None:
    name = _flow_name(doc)
    if name is None:
        return
    if name in names:
        mark = doc.mark(("flow",))
        diags.append(
            Diagnostic(
                file=doc.file,
                line=mark.line,
                column=mark.column,
                rule="duplicate-flow",
                message=f"flow name '{name}' is already used by {names[name]}",
            )
        )
    else:
        names[name] = doc.file
