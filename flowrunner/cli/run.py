"""What the ``run`` command does, between option parsing and output."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from flowrunner.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_PENDING, EXIT_PROBLEMS
from flowrunner.errors import UsageError
from flowrunner.execution.context import Inputs
from flowrunner.execution.record import ExecutionRecord
from flowrunner.project import load_plan, require_root
from flowrunner.secrets import Secrets, read_secrets_file
from flowrunner.tracing import open_tracer

if TYPE_CHECKING:
    from flowrunner.batch.local import Outcome

T = TypeVar("T")


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
    record_to: Path | None = None,
    transport: str | None = None,
    trace_file: Path | None = None,
) -> int:
    """Run one execution and print it (and with ``record_to``, append it to that test
    file as a case); returns the exit code."""
    from flowrunner.cli.report import record_text
    from flowrunner.runner import Runner

    plan = load_plan(require_root(project), flow)
    secrets = make_secrets(secrets_file, masked=dry_run)
    if record_to is not None:
        from flowrunner.testing.record import check_target

        check_target(record_to, plan.flow.name)  # before anything runs
    tracer = open_tracer(trace_file)

    async def go() -> ExecutionRecord:
        async with Runner(
            plan,
            secrets,
            dry_run=dry_run,
            on_complete=on_complete,
            transport=transport,
            tracer=tracer,
        ) as runner:
            if record_to is None:
                return await runner.run(Inputs(**inputs))
            from flowrunner.testing.record import run_recorded

            return await run_recorded(runner, inputs, record_to)

    try:
        record = settle(go) if dry_run and tracer is None else _in_loop(go)
    finally:
        if tracer is not None:
            tracer.close()
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


def settle(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """The result of the coroutine ``make()``, run without an event loop when it never
    waits (a dry run: no store to open, no request, no timer), which spares importing
    asyncio. Should it wait after all, it is closed and run again from the start in a
    loop: a dry run writes nothing, so running it twice changes nothing."""
    coro = make()
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    return _in_loop(make)


def _in_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    import asyncio

    return asyncio.run(make())


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
    transport: str | None = None,
    report: Path | None = None,
    trace_file: Path | None = None,
    stats: bool = True,
) -> int:
    """``run --events``: run every line of ``events``, write the records, summarise.

    ``workers`` > 1 spreads the lines over that many worker processes; ``worker`` is
    the mode such a process runs in (no progress bar, no summary, output flushed as
    soon as it has nothing queued).

    ``report`` writes the HTML report there; ``stats=False`` leaves out the figures
    (counts by status and reason, latency percentiles) and allows no report.

    Exit 130 when interrupted, else 1 if an execution failed or a line was invalid (or
    the input or output failed), else 75 if a push is still pending, else 0.
    """
    import asyncio

    from flowrunner.batch.local import WINDOW_FACTOR, Output, loop_factory, run_events, tune_gc
    from flowrunner.batch.progress import ProgressBar, summary_line
    from flowrunner.batch.stats import BatchStats, Timeline, summary_lines
    from flowrunner.runner import Runner

    if workers > concurrency:
        raise UsageError(f"--workers ({workers}) cannot be more than --concurrency ({concurrency})")
    root = require_root(project)
    plan = load_plan(root, flow)
    tracer = None if workers > 1 else open_tracer(trace_file, append=worker)
    runner = Runner(
        plan,
        make_secrets(secrets_file, masked=dry_run),
        dry_run=dry_run,
        on_complete=on_complete,
        concurrency=concurrency,
        group_commit=True,
        transport=transport,
        tracer=tracer,
    )
    fd, size = _open_events(events)
    out = Output(_open_output(output))
    report_fd = _open_report(report) if report is not None and not worker else None
    figures = BatchStats(timeline=Timeline(start=time.time())) if stats and not worker else None
    bar = ProgressBar(sys.stderr, enabled=sys.stderr.isatty() and not worker, total=size)
    tune_gc()
    with asyncio.Runner(loop_factory=loop_factory()) as loop:
        if workers > 1:
            from flowrunner.batch.workers import run_parallel, shares

            if not dry_run:
                _prepare_state(plan, runner.secrets)  # its errors once, not once per worker
            parts = shares(concurrency, workers)
            spans = _start_spans(trace_file)
            options = (secrets_file, dry_run, on_complete, debug, transport, spans)
            commands = _worker_commands(root, flow, parts, *options)
            window = WINDOW_FACTOR * concurrency
            batch = run_parallel(commands, parts, fd, out, window=window, bar=bar, stats=figures)
        else:
            batch = run_events(
                runner, fd, out, concurrency=concurrency, bar=bar, worker=worker, stats=figures
            )
        try:
            outcome = loop.run(batch)
        finally:
            if tracer is not None:
                tracer.close()
    if worker:
        return EXIT_INTERRUPTED if outcome.interrupted else EXIT_OK
    click.echo(summary_line(outcome.counts, outcome.seconds), err=True)
    written = True
    if figures is not None:
        figures.seconds = outcome.seconds
        for line in summary_lines(figures):
            click.echo(line, err=True)
        if report_fd is not None:
            title = f"flowrunner run {flow} --events {events}"
            written = _write_report(report_fd, report, figures, title)
    code = _batch_exit(outcome, events)
    return EXIT_PROBLEMS if not written and code in (EXIT_OK, EXIT_PENDING) else code


def _open_report(report: Path) -> int:
    """The report file, opened (and emptied) before anything runs: a path that cannot
    be written is a usage error, not a surprise after a long batch."""
    try:
        return os.open(report, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise UsageError(f"{report}: cannot write the report ({_reason(exc)})") from None


def _write_report(fd: int, path: Path | None, figures: Any, title: str) -> bool:
    """Write the report; False (said on stderr) when it could not be written."""
    from flowrunner.batch.html import render

    data = render(figures, title=title).encode("utf-8")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except OSError as exc:
        click.echo(f"flowrunner: writing the report {path} failed ({_reason(exc)})", err=True)
        return False
    click.echo(f"report: {path}", err=True)
    return True


def _start_spans(trace_file: Path | None) -> Path | None:
    """Empty ``trace_file`` for the workers to append to (checking it can be written)."""
    if trace_file is not None:
        try:
            trace_file.write_bytes(b"")
        except OSError as exc:
            raise UsageError(f"{trace_file}: cannot write spans ({_reason(exc)})") from None
    return trace_file


def _prepare_state(plan: Any, secrets: Secrets) -> None:
    """Open the state store (creating it) and seed the user keys, as every run does."""
    from flowrunner.state import open_store

    store = open_store(plan.project.project.state, secrets)
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
    transport: str | None,
    trace_file: Path | None = None,
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
    if transport is not None:
        common += ["--transport", transport]

    if trace_file is not None:  # each worker appends its spans, whole lines at a time
        common += ["--trace-file", str(trace_file)]
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
