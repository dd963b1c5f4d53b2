"""Shared pieces of the command line: options state, exit codes, clean error handling."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from flowrunner.errors import FlowrunnerError, InvalidProject

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_PENDING = 75
EXIT_INTERRUPTED = 130


class State:
    """Options shared by every command."""

    def __init__(self, project: Path | None, debug: bool) -> None:
        self.project = project
        self.debug = debug


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"flowrunner: {message}", err=True)
    sys.exit(code)


def _diagnostics(exc: InvalidProject) -> NoReturn:
    from flowrunner.report import text

    click.echo(text(exc.diagnostics), err=True)
    sys.exit(exc.exit_code)


def guarded(func: F) -> F:
    """Turn errors into one clean line and the documented exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = click.get_current_context().find_object(State)
        debug = state.debug if state else False
        try:
            return func(*args, **kwargs)
        except InvalidProject as exc:
            _diagnostics(exc)
        except FlowrunnerError as exc:
            if debug:
                traceback.print_exc()
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug: say so, without a traceback unless asked
            if debug:
                traceback.print_exc()
            _fail(
                f"internal error: {type(exc).__name__} (run with --debug for details)",
                EXIT_INTERNAL,
            )

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]
