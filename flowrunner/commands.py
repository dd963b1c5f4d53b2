"""What the ``run`` command does, between option parsing and output."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowrunner.cliutil import EXIT_INTERRUPTED, EXIT_OK, EXIT_PENDING, EXIT_PROBLEMS
from flowrunner.engine import Inputs
from flowrunner.errors import UsageError
from flowrunner.project import load_plan, require_root
from flowrunner.result import ExecutionRecord
from flowrunner.secrets import Secrets, read_secrets_file

if TYPE_CHECKING:
    from flowrunner.batch import Outcome


def make_secrets(secrets_file: Path | None, *, masked: bool = False) -> Secrets:
    extra = read_secrets_file(secrets_file) if secrets_file else None
    return Secrets(extra=extra, masked=masked)


def exit_code(records: list[ExecutionRecord]) -> int:
    """1 if any execution failed or its push is dead, else 75 if a push is still
    pending, else 0."""
    if any(r.status == "FAILED" for r in records):
        return EXIT_PROBLEMS
    if any(r.on_complete and r.on_complete["status"] == "dead" for r in records):
        return EXIT_PROBLEMS
    if any(r.on_complete and r.on_complete["status"] == "pending" for r in records):
        return EXIT_PENDING
    return EXIT_OK


def run_once(
    *,
    project: Path | None,
    flow: str,
    secrets_file: Path | None,
    dry_run: bool,
    on_complete: bool,
    inputs: dict[str, Any],
    as_json: bool,
) -> int:
    """Run one execution and print it; returns the exit code."""
    from flowrunner.report import record_text
    from flowrunner.runner import Runner

    plan = load_plan(require_root(project), flow)
    secrets = make_secrets(secrets_file, masked=dry_run)

    async def go() -> ExecutionRecord:
        async with Runner(plan, secrets, dry_run=dry_run, on_complete=on_complete) as runner:
            return await runner.run(Inputs(**inputs))

    record = asyncio.run(go())
    data = record.as_dict()
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, default=str))
    else:
        click.echo(record_text(data, dry_run=dry_run))
    code = exit_code([record])
    if code == EXIT_PENDING:
        click.echo(
            "flowrunner: the on-complete push is waiting in the outbox; "
            "'flowrunner deliveries drain' sends it",
            err=True,
        )
    return code


def run_batch(**options: Any) -> int:
    """``run --events`` with the options of the ``run`` command (see :func:`batch_run`)."""
    return batch_run(**options)


def batch_run(
    *,
    project: Path | None,
    flow: str,
    secrets_file: Path | None,
    events: str,
    concurrency: int,
    output: Path | None,
    dry_run: bool,
    on_complete: bool,
    workers: int = 1,
    worker: bool = False,
    debug: bool = False,
) -> int:
    """``run --events``: run every line of ``events``, write the records, summarise.

    ``workers`` > 1 spreads the lines over that many worker processes; ``worker`` is
    the mode such a process runs in (no progress bar, no summary, output flushed as
    soon as it has nothing queued).

    Exit 130 when interrupted, else 1 if an execution failed or a line was invalid (or
    the input or output failed), else 75 if a push is still pending, else 0.
    """
    from flowrunner.batch import WINDOW_FACTOR, Output, loop_factory, run_events, tune_gc
    from flowrunner.progress import ProgressBar, summary_line
    from flowrunner.runner import Runner

    if workers > concurrency:
        raise UsageError(f"--workers ({workers}) cannot be more than --concurrency ({concurrency})")
    root = require_root(project)
    plan = load_plan(root, flow)
    runner = Runner(
        plan,
        make_secrets(secrets_file, masked=dry_run),
        dry_run=dry_run,
        on_complete=on_complete,
        concurrency=concurrency,
        group_commit=True,
    )
    fd, size = _open_events(events)
    out = Output(_open_output(output))
    bar = ProgressBar(sys.stderr, enabled=sys.stderr.isatty() and not worker, total=size)
    tune_gc()
    with asyncio.Runner(loop_factory=loop_factory()) as loop:
        if workers > 1:
            from flowrunner.workers import run_parallel, shares

            if not dry_run:
                _prepare_state(plan)  # its errors once, here, not once per worker
            parts = shares(concurrency, workers)
            options = (secrets_file, dry_run, on_complete, debug)
            commands = _worker_commands(root, flow, parts, *options)
            window = WINDOW_FACTOR * concurrency
            outcome = loop.run(run_parallel(commands, parts, fd, out, window=window, bar=bar))
        else:
            batch = run_events(runner, fd, out, concurrency=concurrency, bar=bar, worker=worker)
            outcome = loop.run(batch)
    if worker:
        return EXIT_INTERRUPTED if outcome.interrupted else EXIT_OK
    click.echo(summary_line(outcome.counts, outcome.seconds), err=True)
    return _batch_exit(outcome, events)


def _prepare_state(plan: Any) -> None:
    """Open the state file (creating it) and seed the user keys, as every run does."""
    from flowrunner.state import Store

    store = Store.open(plan.project.project.state)
    try:
        store.check_before_use()
        store.seed_user_keys(plan.project.project.user_keys)
    finally:
        store.close()


def _worker_commands(
    root: Path,
    flow: str,
    parts: list[int],
    secrets_file: Path | None,
    dry_run: bool,
    on_complete: bool,
    debug: bool,
) -> list[list[str]]:
    """The command line of each worker process, with its part of the concurrency."""
    common = [sys.executable, "-m", "flowrunner", "--project", str(root)]
    common += ["--debug"] if debug else []
    common += ["run", flow, "--events", "-", "--worker"]
    if secrets_file is not None:
        common += ["--secrets-file", str(secrets_file)]
    if dry_run:
        common.append("--dry-run")
    if not on_complete:
        common.append("--no-on-complete")
    return [[*common, "--concurrency", str(part)] for part in parts]


def _batch_exit(outcome: Outcome, events: str) -> int:
    """Say what went wrong besides executions, and choose the exit code."""
    counts = outcome.counts
    for action, error in (("reading " + events, outcome.read_error),
                          ("writing the records", outcome.write_error)):  # fmt: skip
        if error is not None:
            click.echo(f"flowrunner: {action} failed ({_reason(error)})", err=True)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if (
        counts.failed
        or counts.invalid
        or counts.dead
        or outcome.read_error
        or outcome.write_error
        or outcome.worker_error
    ):
        return EXIT_PROBLEMS
    if counts.pending:
        click.echo(
            f"flowrunner: {counts.pending} on-complete pushes are waiting in the outbox; "
            "'flowrunner deliveries drain' sends them",
            err=True,
        )
        return EXIT_PENDING
    return EXIT_OK


def _open_events(events: str) -> tuple[int, int | None]:
    """The file descriptor to read, and its size when it is a regular file."""
    if events == "-":
        fd = sys.stdin.fileno()
    else:
        try:
            fd = os.open(events, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"{events}: cannot read events ({_reason(exc)})") from None
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{events}: is a folder, not a file of events")
    return fd, info.st_size if stat.S_ISREG(info.st_mode) else None


def _open_output(output: Path | None) -> int:
    if output is None:
        sys.stdout.flush()
        return sys.stdout.fileno()
    try:
        return os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise UsageError(f"{output}: cannot write the records ({_reason(exc)})") from None


def _reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()
