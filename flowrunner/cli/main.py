"""The command line (click): parse options, call one library function, report, exit.

Commands import what they need when they run, so that ``validate``, ``schema`` and
``--help`` never pay for aiohttp.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from flowrunner import __version__
from flowrunner.cli.common import EXIT_OK, EXIT_PROBLEMS, State, guarded, transport_option
from flowrunner.cli.report import FORMATS

MAX_WORKERS = 256


class LazyGroup(click.Group):
    """A group whose heavier subcommands are imported only when they are used.

    ``lazy`` maps a command's name to where it lives and the one-line help that
    ``--help`` lists, so that listing the commands imports none of them (a test
    checks each line against the command's own docstring).
    """

    lazy = {
        "deliveries": (
            "flowrunner.cli.state:deliveries",
            "On-complete pushes in the outbox: list them, retry them, send them.",
        ),
        "runs": ("flowrunner.cli.state:runs", "The execution history kept in the state store."),
        "db": (
            "flowrunner.cli.db:db",
            "The state store: migrate its schema, show its status, check it for damage.",
        ),
        "enqueue": (
            "flowrunner.cli.queue:enqueue",
            "Queue one execution of FLOW per JSON line of FILE ('-': stdin) for the workers.",
        ),
        "worker": (
            "flowrunner.cli.queue:worker",
            "Run queued executions of the shared store, and send due pushes, until stopped.",
        ),
        "serve": (
            "flowrunner.cli.serve:serve",
            "Serve the trigger API: executions over HTTP, queued durably, run in the background.",
        ),
        "test": (
            "flowrunner.cli.authoring:test_command",
            "Run flow tests (*.test.yaml files or folders; default: every one of the project).",
        ),
        "init": (
            "flowrunner.cli.authoring:init_command",
            "Write a working flow repository into FOLDER (default: the working directory).",
        ),
        "graph": (
            "flowrunner.cli.authoring:graph_command",
            "Print a diagram of FLOW (a flow name of the project, or a path).",
        ),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target[0].partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing, with the lazy commands' lines taken from the table
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            if name in self.lazy:
                stand_in = click.Command(name, help=self.lazy[name][1])
                rows.append((name, stand_in.get_short_help_str(limit)))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowrunner")
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="Project folder (default: the first folder upwards holding flowrunner.yaml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.option(
    "--state",
    "state_place",
    metavar="PATH|URL",
    help="The state store for this command: a SQLite file or a postgresql:// URL "
    "(overrides state: in flowrunner.yaml; also FLOWRUNNER_STATE).",
)
@click.pass_context
def main(ctx: click.Context, project: Path | None, debug: bool, state_place: str | None) -> None:
    """flowrunner: declarative YAML call flows, validated in CI and run with webhooks."""
    if state_place:
        from flowrunner.source.to_model import STATE_ENV

        before = os.environ.get(STATE_ENV)
        os.environ[STATE_ENV] = state_place  # child processes (--workers) inherit it
        ctx.call_on_close(lambda: _restore(STATE_ENV, before))
    ctx.obj = State(project, debug)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@main.command()
@click.argument("paths", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Processes checking flow files (default: one per CPU, each with 50 files or more).",
)
@click.pass_obj
@guarded
def validate(state: State, paths: tuple[str, ...], fmt: str, jobs: int | None) -> None:
    """Check flows (files, folders, '-' for stdin; default: the whole project).

    Exit 0 when there is no error, 1 when problems were found, 2 on a usage error.
    """
    from flowrunner.cli.report import RENDERERS
    from flowrunner.validate import validate as run_validate

    diags = run_validate(list(paths), state.project, sys.stdin.buffer, jobs=jobs)
    output = RENDERERS[fmt](diags)
    if output:
        click.echo(output)
    sys.exit(EXIT_PROBLEMS if any(d.severity == "error" for d in diags) else EXIT_OK)


@main.command()
@click.argument("kind", type=click.Choice(["flow", "project", "on-complete", "test", "openapi"]))
@guarded
def schema(kind: str) -> None:
    """Print the JSON Schema of a flow file, the project file, the on-complete payload or a
    test file, or the OpenAPI document of ``serve``."""
    from flowrunner.source.schema import schema_text

    if kind == "openapi":
        import json

        from flowrunner.server.openapi import document

        click.echo(json.dumps(document(), indent=2))
        return
    click.echo(schema_text(kind), nl=False)  # type: ignore[arg-type]


def _pairs(flag: str, values: tuple[str, ...]) -> dict[str, object]:
    from flowrunner.cli.inputs import parse_assignments

    return parse_assignments(flag, values)


def _worker_count(text: str, concurrency: int) -> int:
    """``--workers``: a number from 1 to MAX_WORKERS, or ``auto`` (one per CPU this process
    may use, and no more than the concurrency)."""
    from flowrunner.errors import UsageError

    if text.strip().lower() == "auto":
        return min(usable_cpus(), concurrency)
    try:
        count = int(text)
    except ValueError:
        raise UsageError(f"--workers: {text[:20]!r} is not a number of workers or 'auto'") from None
    if not 1 <= count <= MAX_WORKERS:
        raise UsageError(f"--workers: {count} is not in the range 1 to {MAX_WORKERS}")
    return count


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), at most MAX_WORKERS."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    return max(1, min(count, MAX_WORKERS))


def _check_batch_options(
    events: str | None, values: tuple[str, ...], as_json: bool, output: Path | None, workers: str
) -> None:
    from flowrunner.errors import UsageError

    if events is not None and (values or as_json):
        raise UsageError(
            "--events takes each execution's values from its line and always writes JSON "
            "Lines: --call, --key, --user-key and --json do not apply"
        )
    if events is None and output is not None:
        raise UsageError("--output applies to --events only")
    if events is None and workers.strip() != "1":
        raise UsageError("--workers applies to --events only")


@main.command()
@click.argument("flow")
@click.option("--call", "calls", multiple=True, metavar="NAME=VALUE", help="A $call.* value.")
@click.option("--key", "keys", multiple=True, metavar="NAME=VALUE", help="A flow key value.")
@click.option(
    "--user-key",
    "user_keys",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a user key for this execution only.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the execution record as JSON.")
@click.option("--dry-run", is_flag=True, help="Send nothing; show each request it would send.")
@click.option("--no-on-complete", is_flag=True, help="Do not push the on-complete payload.")
@click.option(
    "--secrets-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="NAME=value lines to read secrets from (besides the environment).",
)
@click.option("--events", metavar="FILE|-", help="Run one execution per JSON line of FILE.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Executions at once with --events.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the --events records here (default: stdout).",
)
@click.option(
    "--workers",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Processes that share the --events lines and the concurrency (auto: one per CPU).",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.html",
    help="With --events: write a self-contained HTML report of the batch here.",
)
@click.option(
    "--trace-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write OpenTelemetry spans here as JSON lines (needs flowrunner[otel]).",
)
@click.option("--worker", is_flag=True, hidden=True)
@click.option(
    "--record",
    "record_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append this run to a test file as a case (answers as mocks, outcome as expect).",
)
@transport_option
@click.pass_obj
@guarded
def run(
    state: State,
    flow: str,
    calls: tuple[str, ...],
    keys: tuple[str, ...],
    user_keys: tuple[str, ...],
    as_json: bool,
    dry_run: bool,
    no_on_complete: bool,
    secrets_file: Path | None,
    events: str | None,
    concurrency: int,
    output: Path | None,
    workers: str,
    report: Path | None,
    trace_file: Path | None,
    worker: bool,
    record_to: Path | None,
    transport: str | None,
) -> None:
    """Run FLOW (a flow name of the project, or a path) for one call or a stream of calls.

    NAME=VALUE gives a string, NAME:=JSON a typed value. Exit 0 when the execution
    completed, 1 when it failed, 2 when the flow is invalid, 75 when an on-complete push
    is still waiting in the outbox.
    """
    from flowrunner.cli.run import run_batch, run_once

    common: dict[str, Any] = {
        "project": state.project,
        "flow": flow,
        "secrets_file": secrets_file,
        "transport": transport,
    }
    _check_batch_options(events, calls + keys + user_keys, as_json, output, workers)
    if record_to is not None and (events is not None or dry_run):
        from flowrunner.errors import UsageError

        raise UsageError("--record records one real run: not with --events or --dry-run")
    if events is None and report is not None:
        from flowrunner.errors import UsageError

        raise UsageError("--report applies to --events only")
    if events is not None:
        code = run_batch(
            **common,
            events=events,
            concurrency=concurrency,
            output=output,
            dry_run=dry_run,
            on_complete=not no_on_complete,
            workers=_worker_count(workers, concurrency),
            worker=worker,
            debug=state.debug,
            report=report,
            trace_file=trace_file,
        )
        sys.exit(code)
    inputs = {
        "call": _pairs("--call", calls),
        "keys": _pairs("--key", keys),
        "user_keys": _pairs("--user-key", user_keys),
    }
    sys.exit(
        run_once(
            **common,
            dry_run=dry_run,
            on_complete=not no_on_complete,
            inputs=inputs,
            as_json=as_json,
            record_to=record_to,
            trace_file=trace_file,
        )
    )


@main.command()
@transport_option
@guarded
def demo(transport: str | None) -> None:
    """Run the example flows against an embedded local receiver (no setup needed)."""
    import asyncio

    from flowrunner.cli.demo import run_demo

    sys.exit(asyncio.run(run_demo(transport=transport)))


@main.group()
def webhooks() -> None:
    """The project's webhooks."""


@webhooks.command("list")
@click.pass_obj
@guarded
def webhooks_list(state: State) -> None:
    """List the webhooks with their URL, method, body, auth and methods."""
    from flowrunner.cli.webhooks import list_webhooks

    click.echo(list_webhooks(state.project))


@webhooks.command("check")
@click.argument("name")
@click.option("--secrets-file", type=click.Path(dir_okay=False, path_type=Path))
@transport_option
@click.pass_obj
@guarded
def webhooks_check(
    state: State, name: str, secrets_file: Path | None, transport: str | None
) -> None:
    """Is the webhook's URL reachable, and is its auth accepted? (exit 0 yes, 1 no)"""
    from flowrunner.cli.webhooks import check_webhook

    ok, message = check_webhook(state.project, name, secrets_file, transport)
    click.echo(message)
    sys.exit(EXIT_OK if ok else EXIT_PROBLEMS)
