"""``flowrunner validate``: check files, folders, stdin or the whole project."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
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


def validate(
    paths: list[str], project_dir: Path | None, stdin: BinaryIO, *, jobs: int | None = None
) -> list[Diagnostic]:
    """Every problem in the given files (or the whole project), sorted.

    The project file is always checked, since every flow depends on it. Flow files
    are checked by ``jobs`` processes (default: :func:`default_jobs`).
    Raises :class:`UsageError` when there is no project or a path does not exist.
    """
    root = require_root(project_dir)
    project_doc, diags = load_doc(root / PROJECT_FILE)
    cproject: CompiledProject | None = None
    if project_doc is not None:
        cproject, diags = check_project_doc(project_doc, root)
    targets = _unique(_targets(paths, root), (root / PROJECT_FILE).resolve())
    flows = [t for t in targets if isinstance(t, Path) and not t.name.endswith(TEST_SUFFIX)]
    checked = iter(check_flow_files(flows, cproject, jobs=jobs))
    names: dict[str, str] = {}
    for target in targets:
        if isinstance(target, Path) and target.name.endswith(TEST_SUFFIX):
            diags += _check_test_doc(target, root, cproject)
            continue
        found = next(checked) if isinstance(target, Path) else _check_stdin(stdin, cproject)
        diags += found.diagnostics
        _check_unique(found, names, diags)
    return sorted(set(diags), key=Diagnostic.sort_key)


def _unique(targets: list[Path | str], project_file: Path) -> list[Path | str]:
    """``targets`` without the project file and files named twice (first kept)."""
    seen = {project_file}
    out: list[Path | str] = []
    for target in targets:
        if isinstance(target, Path):
            resolved = target.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
        out.append(target)
    return out


@dataclass(slots=True)
class FlowChecked:
    """What checking one flow file found: its problems, and its flow name with where
    it is written (for the check that names are unique across files)."""

    diagnostics: list[Diagnostic]
    file: str = ""
    name: str | None = None
    line: int = 1
    column: int = 1


def _check_flow(
    doc: Document | None, diags: list[Diagnostic], cproject: CompiledProject | None
) -> FlowChecked:
    if doc is None:
        return FlowChecked(diags)
    _, more = check_flow_doc(doc, cproject)
    name = _flow_name(doc)
    mark = doc.mark(("flow",))
    return FlowChecked(diags + more, doc.file, name, mark.line, mark.column)


def _check_flow_file(path: Path, cproject: CompiledProject | None) -> FlowChecked:
    return _check_flow(*load_doc(path), cproject)


def _check_stdin(stdin: BinaryIO, cproject: CompiledProject | None) -> FlowChecked:
    try:
        doc = load_stream(stdin, "<stdin>")
    except LoadError as exc:
        return FlowChecked([exc.diagnostic])
    return _check_flow(doc, list(doc.problems), cproject)


MIN_FILES_PER_JOB = 50  # below this many flow files per process, one process is faster


def default_jobs(files: int) -> int:
    """Processes for checking ``files`` flow files: one per CPU this process may use,
    as long as each gets at least :data:`MIN_FILES_PER_JOB` files."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, files // MIN_FILES_PER_JOB))


def check_flow_files(
    paths: list[Path], cproject: CompiledProject | None, *, jobs: int | None = None
) -> list[FlowChecked]:
    """Check the flow files ``paths`` against ``cproject``: their results, in order.

    With more than one job, forked processes check contiguous runs of the files (each
    inheriting the compiled project) and send back only what they found. Where
    processes cannot be forked, or one dies, the files are checked here instead.
    """
    jobs = default_jobs(len(paths)) if jobs is None else jobs
    if jobs > 1 and len(paths) > 1 and _can_fork():
        found = _forked(_split(paths, jobs * RUNS_PER_JOB), cproject, jobs)
        if found is not None:
            return found
    return [_check_flow_file(path, cproject) for path in paths]


RUNS_PER_JOB = 4  # smaller runs than one per process: a slow run delays the others less


def _split(paths: list[Path], parts: int) -> list[list[Path]]:
    size = -(-len(paths) // parts)
    return [paths[start : start + size] for start in range(0, len(paths), size)]


def _forked(
    runs: list[list[Path]], cproject: CompiledProject | None, jobs: int
) -> list[FlowChecked] | None:
    """The results of ``runs`` checked by ``jobs`` forked processes, in order; None when
    a process could not start or died (the caller then checks them itself)."""
    # here: a process pool costs ~15 ms of imports that one file's check never needs
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    global _PROJECT
    _PROJECT = cproject  # what the forked processes inherit, instead of a pickled copy
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            return [result for results in pool.map(_check_run, runs) for result in results]
    except (BrokenProcessPool, OSError):
        return None
    finally:
        _PROJECT = None


_PROJECT: CompiledProject | None = None  # the compiled project, in a forked process


def _check_run(paths: list[Path]) -> list[FlowChecked]:
    return [_check_flow_file(path, _PROJECT) for path in paths]


def _can_fork() -> bool:
    return sys.platform == "linux"  # fork is safe there; elsewhere one process does it


def _check_test_doc(path: Path, root: Path, cproject: CompiledProject | None) -> list[Diagnostic]:
    from flowrunner.testing.suite import check_suite_doc

    doc, diags = load_doc(path)
    if doc is None:
        return diags
    return diags + check_suite_doc(doc, path, root, cproject)[1]


def _check_unique(found: FlowChecked, names: dict[str, str], diags: list[Diagnostic]) -> None:
    name = found.name
    if name is None:
        return
    if name in names:
        diags.append(
            Diagnostic(
                file=found.file,
                line=found.line,
                column=found.column,
                rule="duplicate-flow",
                message=f"flow name '{name}' is already used by {names[name]}",
            )
        )
    else:
        names[name] = found.file
