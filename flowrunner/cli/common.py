"""Shared pieces of the command line: options state, exit codes, clean error handling,
and the scrubbing of secrets from everything a command prints."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from flowrunner.errors import InvalidProject

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
    from flowrunner.cli.report import text

    click.echo(text(exc.diagnostics), err=True)
    sys.exit(exc.exit_code)


SECRETS_MODULE = "flowrunner.secrets"


class ScrubbedStream:
    """A text stream that masks resolved secrets (:func:`flowrunner.secrets.scrub`) in
    every write before passing it on; everything else is the wrapped stream's.

    A secret is resolved only through :mod:`flowrunner.secrets`, which remembers every
    value it resolved: while that module is not imported, no secret can have been
    resolved and there is nothing to mask. So a command that reads no secret
    (``validate``, ``--help``) never imports it.

    It has no ``buffer``, so click writes text through it rather than around it."""

    def __init__(self, inner: IO[str]) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("write() argument must be str")  # click probes with b""
        secrets = sys.modules.get(SECRETS_MODULE)
        self._inner.write(text if secrets is None else secrets.scrub(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    @property
    def encoding(self) -> str:
        return getattr(self._inner, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:
        return getattr(self._inner, "errors", None) or "strict"

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno...
        return getattr(self._inner, name)


@contextmanager
def scrubbed_output() -> Iterator[None]:
    """Route ``sys.stdout`` and ``sys.stderr`` through :class:`ScrubbedStream`."""
    out, err = sys.stdout, sys.stderr
    sys.stdout = ScrubbedStream(out)
    sys.stderr = ScrubbedStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def guarded(func: F) -> F:
    """Turn errors into one clean line and the documented exit code; mask resolved
    secrets in everything the command prints, tracebacks of ``--debug`` included."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with scrubbed_output():
            return _run(func, *args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def _run(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    # imported here, with traceback below: --help and --version never need them
    from flowrunner.errors import FlowrunnerError, InvalidProject

    state = click.get_current_context().find_object(State)
    debug = state.debug if state else False
    try:
        return func(*args, **kwargs)
    except InvalidProject as exc:
        _diagnostics(exc)
    except FlowrunnerError as exc:
        if debug:
            _print_traceback()
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except (click.exceptions.Exit, click.ClickException, SystemExit):
        raise
    except OSError as exc:
        if not closed_output(exc):
            raise _unexpected(exc, debug) from None
        output_closed()
    except Exception as exc:  # a bug: say so, without a traceback unless asked
        raise _unexpected(exc, debug) from None


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def _unexpected(exc: Exception, debug: bool) -> SystemExit:
    if debug:
        _print_traceback()
    click.echo(
        f"flowrunner: internal error: {type(exc).__name__} (run with --debug for details)",
        err=True,
    )
    return SystemExit(EXIT_INTERNAL)


def closed_output(exc: BaseException) -> bool:
    """Whether ``exc`` says the reader of the output went away (``| head``)."""
    return isinstance(exc, BrokenPipeError) or (
        isinstance(exc, OSError) and exc.errno == errno.EPIPE
    )


def output_closed() -> NoReturn:
    """Exit quietly, with 1, once the reader of the output has gone away: nothing more
    can be said there, and nothing is printed (a message would go to a terminal that
    asked for the head only). Standard output is pointed at /dev/null first, so that
    Python's flush at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_PROBLEMS)


def transport_option(func: F) -> F:
    """``--transport fast|aiohttp`` (default: ``FLOWRUNNER_TRANSPORT``, else fast when
    installed); the command receives ``transport`` (None: not given)."""
    from flowrunner.net.transport import ENV_VAR, TRANSPORTS

    option = click.option(
        "--transport",
        type=click.Choice(TRANSPORTS, case_sensitive=False),
        envvar=ENV_VAR,
        help=f"The HTTP transport (default: ${ENV_VAR}, else fast when installed).",
    )
    return option(func)
