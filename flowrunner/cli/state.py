"""The ``deliveries`` and ``runs`` commands: the outbox and the execution history.

Both read the project's state file (``state:`` in ``flowrunner.yaml``). Only
``deliveries drain`` sends anything, so only it imports the HTTP layer.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowrunner.cli.common import EXIT_OK, EXIT_PENDING, State, guarded, transport_option
from flowrunner.errors import Diagnostic, InvalidProject, UsageError

if TYPE_CHECKING:  # --help lists these commands: it must not import the state store
    from flowrunner.oncomplete.delivery import DeliveryStats
    from flowrunner.secrets import Secrets
    from flowrunner.source.model import Project
    from flowrunner.state import StateStore


@contextmanager
def opened(state: State, *, reading: bool = False) -> Iterator[tuple[Project, StateStore]]:
    """The checked project and its open store; raises InvalidProject on project errors.

    ``reading``: the command only reads, so a state file it cannot write is opened
    read-only."""
    from flowrunner.project import load_project, require_root
    from flowrunner.state import open_store

    root = require_root(state.project)
    compiled, diags = load_project(root)
    if compiled is None or any(d.severity == "error" for d in diags):
        raise InvalidProject(sorted(diags, key=Diagnostic.sort_key))
    store = open_store(compiled.project.state, reading=reading)
    try:
        yield compiled.project, store
    finally:
        store.close()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, a header line first."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def short_time(value: str | None) -> str:
    """``2026-11-28T10:00:05.120+00:00`` as ``2026-11-28 10:00:05`` (UTC); None as ``-``."""
    return "-" if value is None else value[:19].replace("T", " ")


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


# ---- deliveries ------------------------------------------------------------------


@click.group()
def deliveries() -> None:
    """On-complete pushes in the outbox: list them, retry them, send them."""


@deliveries.command("list")
@click.option("--dead", is_flag=True, help="Only dead pushes (given up).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of a table.")
@click.pass_obj
@guarded
def list_deliveries(state: State, dead: bool, as_json: bool) -> None:
    """List the pushes in the outbox, oldest first."""
    with opened(state, reading=True) as (_, store):
        rows = store.deliveries(dead_only=dead)
    if as_json:
        click.echo(dumps(rows))
        return
    if not rows:
        click.echo("no dead deliveries" if dead else "no deliveries")
        return
    click.echo(table(_DELIVERY_HEADER, [_delivery_cells(r) for r in rows]))
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("pending", "delivered", "dead")}
    click.echo(f"{len(rows)} deliveries: " + ", ".join(f"{n} {s}" for s, n in counts.items()))


_DELIVERY_HEADER = ("ID", "WEBHOOK", "STATUS", "ATTEMPTS", "NEXT ATTEMPT (UTC)", "LAST ERROR")


def _delivery_cells(row: dict[str, Any]) -> list[str]:
    return [
        row["id"],
        row["webhook"],
        row["status"],
        str(row["attempts"]),
        short_time(row["next_attempt_at"]),
        row["last_error"] or "-",
    ]


@deliveries.command("retry")
@click.argument("delivery_id", metavar="[ID]", required=False)
@click.option("--all-dead", is_flag=True, help="Every dead push.")
@click.pass_obj
@guarded
def retry(state: State, delivery_id: str | None, all_dead: bool) -> None:
    """Make a push due now: ID, or every dead one with --all-dead.

    A dead push gets a fresh retry schedule. Nothing is sent here: 'deliveries drain'
    (or the next run) sends it.
    """
    if (delivery_id is None) != all_dead:
        raise UsageError("give either a delivery ID or --all-dead")
    with opened(state) as (_, store):
        if delivery_id is None:
            count = store.retry_all_dead()
            click.echo(f"{count} dead deliveries are pending again")
            return
        row = store.outbox_row(delivery_id)
        if row is None:
            raise UsageError(f"no delivery with id '{delivery_id}' (see 'deliveries list')")
        if row.status == "delivered":
            raise UsageError(f"delivery '{delivery_id}' was delivered already")
        store.retry(delivery_id)
    click.echo(f"delivery {delivery_id} is pending, due now")


@deliveries.command("drain")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to keep waiting for pushes that fall due.",
)
@click.option("--now", "ignore_schedule", is_flag=True, help="Send every pending push at once.")
@click.option(
    "--secrets-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="NAME=value lines read before the environment.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@transport_option
@click.pass_obj
@guarded
def drain(
    state: State,
    timeout: float,
    ignore_schedule: bool,
    secrets_file: Path | None,
    as_json: bool,
    transport: str | None,
) -> None:
    """Send every push that is due and those falling due within --timeout.

    Exit 0 when nothing is left pending, 75 when something still is, 130 when
    interrupted (SIGINT or SIGTERM; the pushes it held are released at once).
    """
    from flowrunner.secrets import Secrets, read_secrets_file

    secrets = Secrets(extra=read_secrets_file(secrets_file) if secrets_file else None)
    with opened(state) as (project, store):
        store.check_before_use()  # damage found now costs no push sent twice
        stats = _run_drain(project, store, secrets, (timeout, ignore_schedule), transport)
    if as_json:
        click.echo(dumps(stats.as_dict()))
    else:
        click.echo(
            f"delivered {stats.delivered}, failed attempts {stats.retried}, "
            f"dead {stats.dead}, still pending {stats.pending}"
        )
    sys.exit(EXIT_PENDING if stats.pending else EXIT_OK)


def _run_drain(
    project: Project,
    store: StateStore,
    secrets: Secrets,
    how: tuple[float, bool],
    transport: str | None,
) -> DeliveryStats:
    import asyncio
    import signal

    from flowrunner.net.transport import open_client
    from flowrunner.oncomplete.delivery import Deliverer
    from flowrunner.tracing import open_tracer

    tracer = open_tracer(None)  # with OTEL_EXPORTER_OTLP_ENDPOINT: a client span a push

    timeout, ignore_schedule = how

    async def go() -> DeliveryStats | None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, task.cancel)
            except (ValueError, RuntimeError, NotImplementedError):
                pass  # not the main thread (or no signals here): Ctrl-C as before
        async with open_client(project.http, transport=transport) as client:
            # the traced transport keeps the client's connection limit, all the sender reads
            sender: Any = client if tracer is None else tracer.transport(client)
            deliverer = Deliverer(store, sender, project, secrets)
            deliverer.free_dead_leases()
            try:
                return await deliverer.drain(timeout=timeout, ignore_schedule=ignore_schedule)
            except asyncio.CancelledError:
                # attempts cut short may or may not have reached their receiver: the
                # pushes stay pending, free for the next sender at once (same webhook-id)
                deliverer.release_leases()
                return None

    try:
        stats = asyncio.run(go())
    finally:
        if tracer is not None:
            tracer.close()
    if stats is None:
        raise KeyboardInterrupt  # exit 130, "interrupted", as for any command
    return stats


# ---- runs ------------------------------------------------------------------------


@click.group()
def runs() -> None:
    """The execution history kept in the state store."""


@runs.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of a table.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="How many, newest first; 0 for all.",
)
@click.pass_obj
@guarded
def list_runs(state: State, as_json: bool, limit: int) -> None:
    """List executions, newest first."""
    with opened(state, reading=True) as (_, store):
        rows = store.runs(limit)
    if as_json:
        click.echo(dumps(rows))
    elif not rows:
        click.echo("no runs recorded")
    else:
        header = ("EXECUTION ID", "FLOW", "STATUS", "STARTED (UTC)", "ON-COMPLETE")
        cells = [
            [r["execution_id"], r["flow"], r["status"], short_time(r["started_at"]),
             r["on_complete_status"] or "-"]
            for r in rows
        ]  # fmt: skip
        click.echo(table(header, cells))


@runs.command("show")
@click.argument("execution_id", metavar="ID")
@click.pass_obj
@guarded
def show_run(state: State, execution_id: str) -> None:
    """Print one execution record as JSON (its push's status up to date)."""
    with opened(state, reading=True) as (_, store):
        record = store.run(execution_id)
    if record is None:
        raise UsageError(f"no run with execution id '{execution_id}' (see 'runs list')")
    click.echo(dumps(record))


@runs.command("stats")
@click.option(
    "--since",
    metavar="DURATION",
    help="Only runs started this long ago or later: 30m, 2h, 7d, 1h30m.",
)
@click.option("--flow", metavar="NAME", help="Only runs of this flow.")
@click.option("--json", "as_json", is_flag=True, help="The figures as a JSON object.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.html",
    help="Also write them as a self-contained HTML page.",
)
@click.pass_obj
@guarded
def runs_stats(
    state: State, since: str | None, flow: str | None, as_json: bool, report: Path | None
) -> None:
    """Counts by status and error reason, and latency percentiles of executions and of
    each webhook, from the history (as 'run --events' prints them for a batch)."""
    from flowrunner.batch.stats import BatchStats, summary_lines

    cutoff = time.time() - parse_duration(since) if since is not None else None
    figures = BatchStats()
    with opened(state) as (_, store):
        for record in store.records(since=cutoff, flow=flow):
            figures.add_record(record)
    rates = figures.timeline.rates()
    figures.seconds = rates[-1][0] + figures.timeline.width if rates else 0.0
    if report is not None:
        from flowrunner.batch.html import render

        title = "flowrunner runs stats" + (f" --flow {flow}" if flow else "")
        title += f" --since {since}" if since else ""
        try:
            report.write_text(render(figures, title=title), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{report}: cannot write the report ({exc.strerror})") from None
    if as_json:
        click.echo(dumps(figures.as_dict()))
        return
    click.echo(f"{figures.total} runs" + (f" of flow {flow}" if flow else "")
               + (f" started in the last {since}" if since else ""))  # fmt: skip
    for line in summary_lines(figures):
        click.echo(line)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``2h``, ``7d``, ``1h30m``, ``90s`` or ``1w``; raises
    UsageError naming the value otherwise."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or len(compact) > 40 or "".join(n + u for n, u in parts) != compact:
        shown = text[:40].encode("unicode_escape").decode("ascii")
        raise UsageError(f"--since: '{shown}' is not a duration such as 30m, 2h, 7d or 1h30m")
    return sum(float(n) * _UNIT[u] for n, u in parts)
