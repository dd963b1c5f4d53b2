"""``flowrunner db migrate | status``: the schema of the state store.

Opening a store migrates it on its own; ``db migrate`` does it ahead of time (say, in a
deployment step, before the workers start), ``db status`` shows what is applied and what
a newer flowrunner would add, changing nothing. Both work without a project when
``--state`` or ``FLOWRUNNER_STATE`` names the store.
"""

from __future__ import annotations

import json
import os

import click

from flowrunner.cli.common import EXIT_OK, EXIT_PROBLEMS, State, guarded
from flowrunner.errors import Diagnostic, InvalidProject
from flowrunner.source.model import StatePlace
from flowrunner.source.to_model import STATE_ENV, parse_place
from flowrunner.state.records import SchemaStatus


def state_place(state: State) -> StatePlace:
    """The store a command works on: ``--state``/``FLOWRUNNER_STATE``, else the
    project's ``state:``. Raises InvalidProject when the project must be read and is
    invalid, UsageError when there is no project."""
    from pathlib import Path

    override = os.environ.get(STATE_ENV, "").strip()
    if override:
        return parse_place(override, Path.cwd())
    from flowrunner.project import load_project, require_root

    compiled, diags = load_project(require_root(state.project))
    if compiled is None or any(d.severity == "error" for d in diags):
        raise InvalidProject(sorted(diags, key=Diagnostic.sort_key))
    return compiled.project.state


def render(status: SchemaStatus) -> str:
    """``db status`` as text: the store, its version, then each migration."""
    lines = [
        f"{status.backend} {status.where}",
        f"schema version {status.version} of {status.latest}"
        + (" (up to date)" if status.version == status.latest else ""),
    ]
    lines += [f"  applied  {v}  {n}" for v, n, _ in status.applied]
    lines += [f"  pending  {v}  {n}" for v, n in status.pending]
    return "\n".join(lines)


@click.group()
def db() -> None:
    """The schema of the state store: migrate it, or show its status."""


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="A JSON object instead of text.")
@click.pass_obj
@guarded
def status(state: State, as_json: bool) -> None:
    """Show the schema version of the store and the migrations still to apply.

    Exit 0 when the schema is up to date, 1 when migrations are pending.
    """
    from flowrunner.state import schema_status

    found = schema_status(state_place(state))
    click.echo(json.dumps(found.as_dict(), indent=2) if as_json else render(found))
    raise SystemExit(EXIT_OK if not found.pending else EXIT_PROBLEMS)


@db.command("migrate")
@click.pass_obj
@guarded
def migrate(state: State) -> None:
    """Apply the migrations the store lacks (creating it as needed), under its lock."""
    from flowrunner.state import migrate as apply

    before_place = state_place(state)
    from flowrunner.state import schema_status

    before = schema_status(before_place)
    after = apply(before_place)
    applied = after.version - before.version
    click.echo(render(after))
    click.echo(f"{applied} migration{'s' if applied != 1 else ''} applied")
