"""``flowrunner serve``: the trigger API (see docs/serve.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flowrunner.cli.common import State, guarded


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on (0: any free port, logged at start).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Executions run at once.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="Seconds running executions get to finish after SIGTERM/SIGINT.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of the log lines on stderr.",
)
@click.option(
    "--secrets-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="NAME=value lines to read secrets from (besides the environment).",
)
@click.pass_obj
@guarded
def serve(
    state: State,
    host: str,
    port: int,
    concurrency: int,
    grace: float,
    log_format: str,
    secrets_file: Path | None,
) -> None:
    """Serve the trigger API: executions over HTTP, queued durably, run in the background.

    Exit 0 after SIGTERM/SIGINT, 2 when the project is invalid or a token or secret
    is missing.
    """
    from flowrunner.cli.run import make_secrets
    from flowrunner.project import require_root
    from flowrunner.server.main import Options
    from flowrunner.server.main import serve as run_server

    options = Options(
        root=require_root(state.project),
        host=host,
        port=port,
        concurrency=concurrency,
        grace=grace,
        log_format=log_format,
    )
    sys.exit(run_server(options, make_secrets(secrets_file)))
