"""``flowrunner db migrate | status | check``: the state store itself.

Opening a store migrates it on its own; ``db migrate`` does it ahead of time (say, in a
deployment step, before the workers start), ``db status`` shows what is applied and what
a newer flowrunner would add, changing nothing. ``db check`` runs the full check of the
store, reading it without writing anything (also on a read-only file system); commands
with side effects (``run``, ``deliveries drain``) make a quicker check before their
first side effect. All work without a project when ``--state`` or ``FLOWRUNNER_STATE``
names the store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from flowrunner.cli.common import EXIT_OK, EXIT_PROBLEMS, State, guarded
from flowrunner.errors import Diagnostic, InvalidProject, UsageError
from flowrunner.source.model import StatePlace
from flowrunner.source.to_model import STATE_ENV, parse_place
from flowrunner.state.records import SchemaStatus


def state_place(state: State) -> StatePlace:
    """The store a command works on: ``--state``/``FLOWRUNNER_STATE``, else the
    project's ``state:``. Raises InvalidProject when the project must be read and is
    invalid, UsageError when there is no project."""
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


MAX_SHOWN = 20  # problems listed; SQLite stops counting there


@click.group()
def db() -> None:
    """The state store: migrate its schema, show its status, check it for damage."""


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


@db.command("check")
@click.pass_obj
@guarded
def check(state: State) -> None:
    """Check the whole state store for damage.

    Exit 0 when it is sound, 1 when it is damaged (the problems are listed), 2 when
    there is no state file yet.
    """
    from flowrunner.state import describe, integrity_problems

    place = state_place(state)
    where = describe(place)
    if isinstance(place, Path) and not place.is_file():
        raise UsageError(f"{where}: no state file yet (a run creates it)")
    problems = integrity_problems(place, limit=MAX_SHOWN)
    if not problems:
        click.echo(f"{where}: ok")
        raise SystemExit(EXIT_OK)
    for problem in problems:
        click.echo(f"{where}: {problem}")
    more = " (or more)" if len(problems) >= MAX_SHOWN else ""
    kind = "file" if isinstance(place, Path) else "store"
    click.echo(
        f"{where}: damaged, {len(problems)} problem(s){more}. Keep a copy of the {kind}: "
        "it holds the outbox of pending pushes ('flowrunner deliveries list')",
        err=True,
    )
    raise SystemExit(EXIT_PROBLEMS)
