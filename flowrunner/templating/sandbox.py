"""The bounded sandbox: the Jinja environment class and its hooks (reference helpers,
a safe ``range`` and ``lipsum``, bounded operators, ``str.format``, calls and ``~``
joins), each looking at the render's clock and budget (see :mod:`flowrunner.templating.limits`)."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import (
    MAX_RANGE,
    ImmutableSandboxedEnvironment,
    SandboxedFormatter,
)
from jinja2.utils import generate_lorem_ipsum
from markupsafe import EscapeFormatter, Markup

from flowrunner.templating import limits
from flowrunner.templating.limits import MAX_VALUE, LimitExceeded
from flowrunner.templating.references import VARIABLES, Missing, resolve

_MAX_INT_BITS = 10_000  # below Python's 4300-digit limit on int -> str
SOFT_HELPER = "_ref_or_undefined"
LOOP_ITEMS = "_loop_items"


@pass_context
def reference_helper(context: Context, scope: str, *path: str) -> Any:
    return resolve(context.parent[VARIABLES], scope, path)


@pass_context
def reference_or_undefined(context: Context, scope: str, *path: str) -> Any:
    try:
        return resolve(context.parent[VARIABLES], scope, path)
    except Missing as exc:
        return context.environment.undefined(hint=f"undefined variable {exc.reference}")


def safe_range(*args: int) -> range:
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items")
    return numbers


def as_int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    words = as_int(n) * (abs(as_int(min)) + abs(as_int(max)))
    limits.require(words * 12, "the result of lipsum()")  # words of at most 11 letters
    return str(generate_lorem_ipsum(n, html, min, max))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before computing it."""
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        if right > 0 and abs(left) > 1 and right * abs(left).bit_length() > _MAX_INT_BITS:
            raise LimitExceeded("value too large: the result of ** is over the limit")
    elif operator == "*":
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | bytes | list | tuple) and isinstance(count, int):
                limits.require(len(sequence) * count, "the result of *")
        if isinstance(left, int) and isinstance(right, int):
            if abs(left).bit_length() + abs(right).bit_length() > _MAX_INT_BITS:
                raise LimitExceeded("value too large: the result of * is over the limit")
    elif operator == "+":
        if isinstance(left, str | bytes | list | tuple) and type(left) is type(right):
            limits.require(len(left) + len(right), "the result of +")
    elif operator == "%" and isinstance(left, str | bytes):
        limits.require(limits.printf_estimate(left, right), "the result of %")


class _Formatter(SandboxedFormatter):
    """``str.format`` in the sandbox, with widths and formatted values bounded."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        limits.require(limits.spec_estimate(format_spec), "the result of format")
        limits.require_measure(value, "a formatted value")
        return limits.built(super().format_field(value, format_spec), "the result of format")


class _EscapeFormatter(_Formatter, EscapeFormatter):
    pass


_STRING_TYPES = (str, bytes, bytearray)
_SEQUENCES = (str, bytes, bytearray, list, tuple)
_READ_ONLY_RECEIVERS = (dict, list, tuple)  # their methods return what they hold
_CODEC_METHODS = frozenset({"encode", "decode"})


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` joined by the environment's bounded concat."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _bounded_concat(items: Iterable[Any]) -> str:
    """``"".join`` of ``~``, ``{% set %}`` blocks and macros: at most MAX_VALUE."""
    parts: list[str] = []
    size = 0
    for item in items:
        if not isinstance(item, str):
            limits.require_measure(item, "a joined value")
            item = str(item)
        size += len(item)
        if size > MAX_VALUE:
            raise limits.too_large("joined text")
        parts.append(item)
    limits.charge(size)
    return "".join(parts)


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, bounded (see :mod:`flowrunner.templating.limits`): every call,
    attribute, item, operator, filter, loop and join looks at the render's clock and
    budget, and what can amplify (``'a' * 10**9``, ``'x'.center(10**9)``,
    ``'%09999999d' % 1``, ``[s] * n | join``...) is estimated before it runs."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(_bounded_concat)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and not isinstance(left, _SEQUENCES):
            return left + right  # numbers: the common case, nothing to bound
        _check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        return limits.built(result, f"the result of {operator}")

    def getattr(self, obj: Any, attribute: str) -> Any:
        limits.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        limits.tick()
        return super().getitem(obj, argument)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if obj is reference_helper or obj is reference_or_undefined or obj is limits.metered_items:
            return context.call(obj, *args, **kwargs)  # our own reads: nothing is built
        limits.tick()
        receiver = getattr(obj, "__self__", None)
        if isinstance(receiver, _STRING_TYPES) and isinstance(obj, types.BuiltinMethodType):
            what = f"the result of {obj.__name__}()"
            if obj.__name__ in _CODEC_METHODS:
                limits.check_codec(obj.__name__, args, kwargs)
            if obj.__name__ == "join" and args:
                items = list(limits.metered_items(args[0]))
                limits.require(limits.join_estimate(receiver, items), what)
                args = (items, *args[1:])
            limits.require(limits.method_estimate(receiver, obj.__name__, args, kwargs), what)
            return limits.built(super().call(context, obj, *args, **kwargs), what)
        if isinstance(receiver, int) and getattr(obj, "__name__", "") == "to_bytes":
            limits.require(as_int(args[0] if args else kwargs.get("length"), 1), "to_bytes()")
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, _STRING_TYPES) and not isinstance(receiver, _READ_ONLY_RECEIVERS):
            return limits.built(result, "the result of a call")  # macros, caller(), loop()
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``str.format_map`` through :class:`_Formatter` (the
        sandbox's own wrapper, with a bounded formatter)."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        formatter: SandboxedFormatter
        if isinstance(text, Markup):
            formatter = _EscapeFormatter(self, escape=text.escape)
        else:
            formatter = _Formatter(self)
        is_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                mapping: Any = args[0]
                args, kwargs = (), mapping
            result: str = type(text)(formatter.vformat(text, args, kwargs))
            limits.built(result, "the result of format")
            return result

        return functools.update_wrapper(wrapper, value)
