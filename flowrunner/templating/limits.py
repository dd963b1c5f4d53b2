"""What one template render may do: how large a value it may build, how much work it
may do, how long it may take. Pure Python; :mod:`flowrunner.templating` calls these
from the hooks of its Jinja sandbox.

A render runs under a :class:`Meter` (:func:`start`, :func:`stop`). Every loop item and
every value a filter, method or operator builds is charged to the meter's budget of
:data:`RENDER_BUDGET` units (one unit per character or item); every hook also looks at
the clock, so a render stops at :data:`RENDER_SECONDS` in any thread, without signals.

Operations whose result can be much larger than their inputs (padding to a width,
repeating, replacing, joining, printf and ``str.format`` widths...) are estimated
*before* they run and refused when the estimate is over :data:`MAX_VALUE`: the
allocation never happens. A value made of shared references (``[s] * 1000``) is
small in memory but large once written out; :func:`measure` counts it written out,
and is checked before anything turns a container into text.

The clock is only read between calls: one call into C cannot be interrupted. Such calls
are allowed only when their time is linear in their input: ``str.encode`` and
``bytes.decode`` take the codecs in :data:`LINEAR_CODECS` only (``punycode`` is
quadratic, ``idna`` runs punycode), see :func:`check_codec`.
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Any

MAX_VALUE = 64 * 1024  # characters or items of any value a template builds or renders
MAX_INPUT = 1 << 20  # size of a value a filter may work on (a webhook answer's limit)
RENDER_BUDGET = 4 << 20  # units per render: loop items + characters/items built
RENDER_SECONDS = 1.0  # wall-clock time per render

TOO_LARGE = "template-too-large"
TOO_SLOW = "template-timeout"
UNSAFE = "template-unsafe"

# codecs that run in time linear in their input (canonical names, codecs.lookup)
LINEAR_CODECS = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                           "utf-32-le", "utf-32-be", "ascii", "iso8859-1", "cp1252"})  # fmt: skip
_CODEC_NAME = 40  # characters of a codec name worth looking up


class LimitExceeded(Exception):
    """A render went over a limit; ``rule`` is ``template-too-large`` or
    ``template-timeout``. The message names the limit, never a value."""

    def __init__(self, message: str, rule: str = TOO_LARGE) -> None:
        super().__init__(message)
        self.rule = rule


class Meter:
    """The budget and deadline of one render."""

    __slots__ = ("units", "deadline")

    def __init__(self, budget: int, seconds: float) -> None:
        self.units = budget
        self.deadline = time.monotonic() + seconds

    def tick(self) -> None:
        """Raise when the render is past its deadline."""
        if time.monotonic() > self.deadline:
            raise LimitExceeded(
                f"template took longer than {RENDER_SECONDS:g} s to render", TOO_SLOW
            )

    def charge(self, units: int) -> None:
        """Spend ``units`` of the budget; raise when it is spent or time is up."""
        self.units -= units
        if self.units < 0:
            raise LimitExceeded(
                f"template does too much work (more than {RENDER_BUDGET} loop items "
                "and characters built in one render)",
                TOO_SLOW,
            )
        self.tick()


_METER: ContextVar[Meter | None] = ContextVar("flowrunner_render_meter", default=None)


def start() -> Token[Meter | None]:
    """Start a render under a fresh meter; hand the token to :func:`stop` when done.
    (A pair of calls rather than a context manager: this runs on every render.)"""
    return _METER.set(Meter(RENDER_BUDGET, RENDER_SECONDS))


def stop(token: Token[Meter | None]) -> None:
    _METER.reset(token)


def tick() -> None:
    """Look at the clock of the current render, if any."""
    meter = _METER.get()
    if meter is not None:
        meter.tick()


def charge(units: int) -> None:
    """Charge the current render, if any."""
    meter = _METER.get()
    if meter is not None:
        meter.charge(units)


def metered_items(iterable: Any) -> Iterator[Any]:
    """``iterable``, charging one unit per item to the current render."""
    meter = _METER.get()
    if meter is None:
        yield from iterable
        return
    for item in iterable:
        meter.charge(1)
        yield item


def too_large(what: str, limit: int = MAX_VALUE) -> LimitExceeded:
    return LimitExceeded(f"value too large: {what} is over {_size_name(limit)}")


def _size_name(limit: int) -> str:
    if limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    return f"{limit >> 10} KiB" if limit % 1024 == 0 else f"{limit} characters"


def built(value: Any, what: str) -> Any:
    """A value an operation has just built: refused over MAX_VALUE, else charged."""
    if isinstance(value, str | bytes | bytearray | list | tuple | dict | set | frozenset):
        size = len(value)
        if size > MAX_VALUE:
            raise too_large(what)
        charge(size)
    else:
        tick()
    return value


def require(estimate: int, what: str, limit: int = MAX_VALUE) -> None:
    """Refuse an operation whose result is estimated over ``limit``."""
    if estimate > limit:
        raise too_large(what, limit)


_TEXT, _NUMBER, _SCALAR, _SEQUENCE, _MAPPING = range(5)
_KINDS = {str: _TEXT, bytes: _TEXT, bytearray: _TEXT, int: _NUMBER, bool: _SCALAR,
          float: _SCALAR, type(None): _SCALAR, list: _SEQUENCE, tuple: _SEQUENCE,
          set: _SEQUENCE, frozenset: _SEQUENCE, dict: _MAPPING}  # fmt: skip


def _kind(value: Any) -> int:
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    for base, found in _KINDS.items():  # subclasses (Markup, OrderedDict...)
        if isinstance(value, base):
            return found
    return _SCALAR


def measure(value: Any, limit: int, indent: int = 0) -> int:
    """The size of ``value`` written out: characters of its text and keys, digits of
    its integers, plus one per item, shared references counted each time (plus
    ``indent`` per nesting level and item, for indented output). Stops counting once
    over ``limit``; cycles end there."""
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = _kind(item)
        total += depth * indent
        if kind == _TEXT:
            total += len(item)
        elif kind == _NUMBER:
            total += item.bit_length() // 3 + 1  # at least its decimal digits
        elif kind == _SCALAR:
            total += 1
        else:
            total += len(item)
            if total > limit:
                break
            for child in item.values() if kind == _MAPPING else ():
                push((child, depth + 1))
            for child in item:
                push((child, depth + 1))
        if total > limit:
            break
    return total


def require_measure(value: Any, what: str, limit: int = MAX_VALUE, indent: int = 0) -> None:
    """Refuse to turn ``value`` into text (or to work on it) when it is over ``limit``."""
    if not isinstance(value, str) or indent:
        require(measure(value, limit, indent), what, limit)
    elif len(value) > limit:
        raise too_large(what, limit)


def codec_allowed(name: Any) -> bool:
    """Whether ``name`` is a codec of :data:`LINEAR_CODECS` (under any of its aliases)."""
    if not isinstance(name, str) or len(name) > _CODEC_NAME:
        return False
    try:
        return codecs.lookup(name).name in LINEAR_CODECS
    except LookupError:
        return False


def check_codec(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse ``encode``/``decode`` (the method ``name``) with a codec whose running time
    is not linear; raises LimitExceeded (rule ``template-unsafe``)."""
    codec = _arg(args, kwargs, 0, "encoding")
    if codec is None or codec_allowed(codec):
        return
    shown = codec if isinstance(codec, str) and len(codec) <= _CODEC_NAME else "this codec"
    raise LimitExceeded(codec_refusal(name, shown), UNSAFE)


def codec_refusal(method: str, codec: str) -> str:
    """The message refusing ``method(codec)``."""
    return (
        f"unsafe template: {method}() with the codec '{codec}' is not allowed (its running "
        "time is not bounded); use utf-8, utf-16, utf-32, ascii, latin-1 or cp1252"
    )


# --- estimates of operations that can amplify ------------------------------------------


def _int(value: Any, default: int = 0) -> int:
    """An integer argument as the operation will read it (0 when it is not one)."""
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, int) else default


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def replace_estimate(text: Any, old: Any, new: Any, count: Any) -> int:
    """Length of ``text.replace(old, new, count)`` (without building it)."""
    if not isinstance(text, str | bytes | bytearray) or not isinstance(
        old, str | bytes | bytearray
    ):
        return 0
    if not isinstance(new, str | bytes | bytearray):
        return len(text)
    hits = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def join_estimate(separator: Any, items: Sequence[Any], limit: int = MAX_VALUE) -> int:
    """Length of ``separator.join(items)``, items measured written out."""
    total = len(separator) * max(0, len(items) - 1) if isinstance(separator, str) else 0
    for item in items:
        if total > limit:
            break
        total += len(item) if isinstance(item, str) else measure(item, limit)
    return total


def method_estimate(receiver: Any, name: str, args: Sequence[Any], kwargs: Any) -> int:
    """Length of the result of a str/bytes method that can amplify; 0 for the others."""
    if name in ("center", "ljust", "rjust", "zfill"):
        return _int(_arg(args, kwargs, 0, "width"))
    if name == "expandtabs":
        size = _int(_arg(args, kwargs, 0, "tabsize"), 8)
        tab = "\t" if isinstance(receiver, str) else b"\t"
        return len(receiver) + int(receiver.count(tab)) * max(size, 0)
    if name == "replace":
        if len(args) < 2:
            return 0
        return replace_estimate(receiver, args[0], args[1], _arg(args, kwargs, 2, "count"))
    if name == "translate" and isinstance(receiver, str):
        table = _arg(args, kwargs, 0, "table")
        values = table.values() if isinstance(table, Mapping) else ()
        longest = max((len(v) for v in values if isinstance(v, str)), default=1)
        return len(receiver) * max(longest, 1)
    return 0


# printf-style conversions: %[(key)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.S)


def printf_estimate(template: str | bytes, args: Any) -> int:
    """An upper bound on the length of ``template % args``."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    values = list(args) if isinstance(args, tuple) else [args]
    total, index = len(text), 0
    for match in _PRINTF.finditer(text):
        key, width, precision, kind = match.groups()
        for field in (width, precision):
            if field == "*":
                total += _int(values[index] if index < len(values) else 0)
                index += 1
            elif field:
                total += int(field) if len(field) <= 12 else MAX_VALUE + 1
        if kind != "%":
            if key is None and index < len(values):
                total += measure(values[index], MAX_VALUE)
                index += 1
            elif key is not None and isinstance(args, Mapping):
                total += measure(args.get(key), MAX_VALUE)
        if total > MAX_VALUE:
            break
    return total


_DIGITS = re.compile(r"\d+")


def spec_estimate(spec: str) -> int:
    """An upper bound on the width a ``format()`` spec asks for (fill, width, precision)."""
    return sum(int(d) if len(d) <= 12 else MAX_VALUE + 1 for d in _DIGITS.findall(spec))
