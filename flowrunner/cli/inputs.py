"""Execution inputs from the command line: ``NAME=VALUE`` and ``NAME:=JSON``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from flowrunner.errors import UsageError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_assignment(flag: str, text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` gives a string; ``NAME:=JSON`` a typed value."""
    name, sep, value = text.partition("=")
    typed = name.endswith(":")
    if typed:
        name = name[:-1]
    if not sep or not NAME.match(name):
        shown = name if NAME.match(name) else "…"
        raise UsageError(
            f"{flag} {shown}: expected NAME=VALUE or NAME:=JSON "
            "(NAME is letters, digits and _, not starting with a digit)"
        )
    try:
        parsed = json.loads(value) if typed else value
        # a lone surrogate (bad UTF-8 in argv, or "\ud800" in JSON) cannot be sent or stored
        json.dumps(parsed, ensure_ascii=False).encode()
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag} {name}: not valid JSON after ':=' ({exc.msg})") from None
    except RecursionError:
        raise UsageError(f"{flag} {name}: the JSON value is nested too deeply") from None
    except UnicodeEncodeError:
        raise UsageError(f"{flag} {name}: the value is not valid Unicode") from None
    return name, parsed


def parse_assignments(flag: str, values: Iterable[str]) -> dict[str, Any]:
    """All ``--flag`` values as a dict; a later one wins."""
    return dict(parse_assignment(flag, text) for text in values)
