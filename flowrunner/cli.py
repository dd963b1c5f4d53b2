"""The command line (click): parse options, call one library function, report, exit.

Commands import what they need when they run, so that ``validate``, ``schema`` and
``--help`` never pay for aiohttp.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from flowrunner import __version__
from flowrunner.cliutil import EXIT_OK, EXIT_PROBLEMS, State, guarded

MAX_WORKERS = 256


class LazyGroup(click.Group):
    """A group whose heavier subcommands are imported only when they are used."""

    lazy = {
        "deliveries": "flowrunner.cli_state:deliveries",
        "runs": "flowrunner.cli_state:runs",
        "db": "flowrunner.cli_db:db",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowrunner")
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="Project folder (default: the first folder upwards holding flowrunner.yaml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def main(ctx: click.Context, project: Path | None, debug: bool) -> None:
    """flowrunner: declarative YAML call flows, validated in CI and run with webhooks."""
    ctx.obj = State(project, debug)


@main.command()
@click.argument("paths", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.pass_obj
@guarded
def validate(state: State, paths: tuple[str, ...], fmt: str) -> None:
    """Check flows (files, folders, '-' for stdin; default: the whole project).

    Exit 0 when there is no error, 1 when problems were found, 2 on a usage error.
    """
    from flowrunner.report import RENDERERS
    from flowrunner.validate import validate as run_validate

    diags = run_validate(list(paths), state.project, sys.stdin.buffer)
    output = RENDERERS[fmt](diags)
    if output:
        click.echo(output)
    sys.exit(EXIT_PROBLEMS if any(d.severity == "error" for d in diags) else EXIT_OK)


@main.command()
@click.argument("kind", type=click.Choice(["flow", "project", "on-complete"]))
@guarded
def schema(kind: str) -> None:
    """Print the JSON Schema of a flow file, the project file or the on-complete payload."""
    from flowrunner.schema import schema_text

    click.echo(schema_text(kind), nl=False)  # type: ignore[arg-type]


def _pairs(flag: str, values: tuple[str, ...]) -> dict[str, object]:
    from flowrunner.inputs import parse_assignments

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
@click.option("--worker", is_flag=True, hidden=True)
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
    worker: bool,
) -> None:
    """Run FLOW (a flow name of the project, or a path) for one call or a stream of calls.

    NAME=VALUE gives a string, NAME:=JSON a typed value. Exit 0 when the execution
    completed, 1 when it failed, 2 when the flow is invalid, 75 when an on-complete push
    is still waiting in the outbox.
    """
    from flowrunner.commands import run_batch, run_once

    common = {"project": state.project, "flow": flow, "secrets_file": secrets_file}
    _check_batch_options(events, calls + keys + user_keys, as_json, output, workers)
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
        )
        sys.exit(code)
    inputs = {
        "call": _pairs("--call", calls),
        "keys": _pairs("--key", keys),
        "user_keys": _pairs("--user-key", user_keys),
    }
    sys.exit(
        run_once(
            project=state.project,
            flow=flow,
            secrets_file=secrets_file,
            dry_run=dry_run,
            on_complete=not no_on_complete,
            inputs=inputs,
            as_json=as_json,
        )
    )


@main.command()
@guarded
def demo() -> None:
    """Run the example flows against an embedded local receiver (no setup needed)."""
    import asyncio

    from flowrunner.demo import run_demo

    sys.exit(asyncio.run(run_demo()))


@main.group()
def webhooks() -> None:
    """The project's webhooks."""


@webhooks.command("list")
@click.pass_obj
@guarded
def webhooks_list(state: State) -> None:
    """List the webhooks with their URL, method, body, auth and methods."""
    from flowrunner.checks import list_webhooks

    click.echo(list_webhooks(state.project))


@webhooks.command("check")
@click.argument("name")
@click.option("--secrets-file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
@guarded
def webhooks_check(state: State, name: str, secrets_file: Path | None) -> None:
    """Is the webhook's URL reachable, and is its auth accepted? (exit 0 yes, 1 no)"""
    from flowrunner.checks import check_webhook

    ok, message = check_webhook(state.project, name, secrets_file)
    click.echo(message)
    sys.exit(EXIT_OK if ok else EXIT_PROBLEMS)
