"""What the ``run`` command does, between option parsing and output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from flowrunner.cliutil import EXIT_OK, EXIT_PENDING, EXIT_PROBLEMS
from flowrunner.engine import Inputs
from flowrunner.project import load_plan, require_root
from flowrunner.result import ExecutionRecord
from flowrunner.secrets import Secrets, read_secrets_file


def make_secrets(secrets_file: Path | None, *, masked: bool = False) -> Secrets:
    extra = read_secrets_file(secrets_file) if secrets_file else None
    return Secrets(extra=extra, masked=masked)


def exit_code(records: list[ExecutionRecord]) -> int:
    """1 if any execution failed, else 75 if a push is still pending, else 0."""
    if any(r.status == "FAILED" for r in records):
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
    from flowrunner.batch import run_events

    return run_events(**options)
