"""``flowrunner enqueue`` and ``flowrunner worker``: the queue of executions of a shared
(PostgreSQL) state store, filled from JSON Lines and run by workers on any machine."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

import click

from flowrunner.cli.common import EXIT_OK, EXIT_PROBLEMS, State, guarded
from flowrunner.errors import UsageError


@click.command()
@click.argument("flow")
@click.option("--events", required=True, metavar="FILE|-", help="One execution per JSON line.")
@click.option(
    "--secrets-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="NAME=value lines (for the store's password secret).",
)
@click.pass_obj
@guarded
def enqueue(state: State, flow: str, events: str, secrets_file: Path | None) -> None:
    """Queue one execution of FLOW per JSON line of FILE ('-': stdin) for the workers.

    Prints {"line": n, "execution_id": "..."} per line once it is queued. Exit 0 when
    every line was queued, 1 when a line was invalid (the others are queued), 2 when
    FLOW is unknown or invalid or the store has no queue.
    """
    from flowrunner.batch.enqueue import enqueue_lines, lines_of
    from flowrunner.cli.run import make_secrets
    from flowrunner.project import load_plan, require_root
    from flowrunner.state import open_store

    root = require_root(state.project)
    plan = load_plan(root, flow)  # an unknown or invalid flow queues nothing (exit 2)
    store: Any = open_store(plan.project.project.state, make_secrets(secrets_file))
    try:
        store.seed_user_keys(plan.project.project.user_keys)
        with _events_stream(events) as stream:
            counts = enqueue_lines(store, plan.flow.name, lines_of(stream), _emit)
    finally:
        store.close()
    click.echo(f"{counts.queued} queued, {counts.invalid} invalid", err=True)
    sys.exit(EXIT_PROBLEMS if counts.invalid else EXIT_OK)


def _events_stream(events: str) -> BinaryIO:
    if events == "-":
        return sys.stdin.buffer
    try:
        return open(events, "rb")  # noqa: SIM115 - closed by the caller's with
    except OSError as exc:
        raise UsageError(f"{events}: cannot read events ({exc.strerror})") from None


def _emit(report: dict[str, object]) -> None:
    click.echo(json.dumps(report, ensure_ascii=False))


@click.command()
@click.option(
    "--concurrency", type=click.IntRange(1, 4096), default=64, show_default=True,
    help="Executions at once in this process.",
)  # fmt: skip
@click.option(
    "--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
    help="Seconds running executions get to finish on SIGTERM/SIGINT.",
)  # fmt: skip
@click.option(
    "--secrets-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="NAME=value lines to read secrets from (besides the environment).",
)
@click.pass_obj
@guarded
def worker(state: State, concurrency: int, grace: float, secrets_file: Path | None) -> None:
    """Run queued executions of the shared store, and send due pushes, until stopped.

    On SIGTERM or SIGINT it claims nothing new, lets running executions finish within
    --grace seconds, releases the rest (waiting again) and exits 0.
    """
    from flowrunner.batch.local import loop_factory
    from flowrunner.cli.run import make_secrets
    from flowrunner.oncomplete.delivery import default_owner
    from flowrunner.project import load_project, require_root
    from flowrunner.server.worker import run_worker, say

    root = require_root(state.project)
    compiled, diags = load_project(root)
    if compiled is None or any(d.severity == "error" for d in diags):
        from flowrunner.errors import Diagnostic, InvalidProject

        raise InvalidProject(sorted(diags, key=Diagnostic.sort_key))
    owner = default_owner()
    secrets = make_secrets(secrets_file)
    with asyncio.Runner(loop_factory=loop_factory()) as loop:
        done = loop.run(
            run_worker(
                root,
                compiled.project.state,
                secrets,
                concurrency=concurrency,
                grace=grace,
                owner=owner,
            )  # fmt: skip
        )
    if done.cancelled:
        say(f"{done.cancelled} executions did not finish within {grace:g} s: released")
    say(f"{owner} stopped: {done.ended} executions ended, {done.failed} failed")
    sys.exit(EXIT_OK)
