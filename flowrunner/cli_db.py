"""The ``db`` commands: the state file itself.

``flowrunner db check`` runs SQLite's full integrity check on the project's state file,
reading it without writing anything (also on a read-only file system). Commands that
have side effects (``run``, ``deliveries drain``) make a quicker check before their
first side effect (see :meth:`flowrunner.state.Store.check_before_use`); this one looks
at every page and index.
"""

from __future__ import annotations

import sys

import click

from flowrunner.cliutil import EXIT_OK, EXIT_PROBLEMS, State, guarded
from flowrunner.errors import Diagnostic, InvalidProject, UsageError

MAX_SHOWN = 20  # problems listed; SQLite stops counting there


@click.group()
def db() -> None:
    """The state file (user keys, execution history, outbox)."""


@db.command("check")
@click.pass_obj
@guarded
def check(state: State) -> None:
    """Check the whole state file for damage.

    Exit 0 when it is sound, 1 when it is damaged (the problems are listed), 2 when
    there is no state file yet.
    """
    from flowrunner.project import load_project, require_root
    from flowrunner.state import integrity_problems

    root = require_root(state.project)
    compiled, diags = load_project(root)
    if compiled is None or any(d.severity == "error" for d in diags):
        raise InvalidProject(sorted(diags, key=Diagnostic.sort_key))
    path = compiled.project.state
    if not path.is_file():
        raise UsageError(f"{path}: no state file yet (a run creates it)")
    problems = integrity_problems(path, MAX_SHOWN)
    if not problems:
        click.echo(f"{path}: ok")
        sys.exit(EXIT_OK)
    for problem in problems:
        click.echo(f"{path}: {problem}")
    more = " (or more)" if len(problems) >= MAX_SHOWN else ""
    click.echo(
        f"{path}: damaged, {len(problems)} problem(s){more}. Keep a copy of the file: "
        "it holds the outbox of pending pushes ('flowrunner deliveries list')",
        err=True,
    )
    sys.exit(EXIT_PROBLEMS)
