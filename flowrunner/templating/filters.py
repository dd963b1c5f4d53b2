"""The sandbox's filters, with their inputs measured, their amplification estimated
before they run and their results charged to the render's budget."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from jinja2 import pass_environment
from jinja2.environment import Environment
from jinja2.filters import make_attrgetter

from flowrunner.templating import limits
from flowrunner.templating.limits import MAX_INPUT, MAX_VALUE
from flowrunner.templating.sandbox import as_int

# filters whose result is at least as long as their input's text: an input over
# MAX_VALUE can only give a result over it
_STRINGIFIERS = frozenset(
    {"capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower",
     "pprint", "safe", "string", "title", "tojson", "upper", "urlencode", "urlize",
     "wordwrap", "xmlattr"}
)  # fmt: skip
_CONSTANT_TIME = frozenset({"count", "d", "default", "first", "last", "length", "random"})

Estimate = Callable[[Any, tuple[Any, ...], dict[str, Any]], int]


def _param(params: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, dflt: Any) -> Any:
    return params[i] if len(params) > i else kwargs.get(name, dflt)


def _indent_estimate(value: Any, params: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    width = _param(params, kwargs, 0, "width", 4)
    width = len(width) if isinstance(width, str) else as_int(width)
    text = value if isinstance(value, str) else ""
    return limits.measure(value, MAX_VALUE) + (text.count("\n") + 1) * max(width, 0)


def _wordwrap_estimate(value: Any, params: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    # a break inside a word adds the wrap string; a break at whitespace replaces it
    text = value if isinstance(value, str) else str(value)
    width = max(as_int(_param(params, kwargs, 0, "width", 79)), 1)
    wrap = _param(params, kwargs, 2, "wrapstring", None)
    size = len(wrap) if isinstance(wrap, str) else 1
    spaces = sum(map(text.count, (" ", "\t", "\n", "-")))
    return len(text) + (len(text) // width + 1) * size + spaces * max(size - 1, 0)


def _replace_estimate(value: Any, params: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    if len(params) < 2:
        return 0
    text = value if isinstance(value, str) else str(value)
    return limits.replace_estimate(
        text, params[0], params[1], _param(params, kwargs, 2, "count", None)
    )


def _format_estimate(value: Any, params: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return limits.printf_estimate(value, kwargs or params) if isinstance(value, str) else 0


_ESTIMATES: dict[str, Estimate] = {
    "center": lambda v, p, k: as_int(_param(p, k, 0, "width", 80)),
    "indent": _indent_estimate,
    "wordwrap": _wordwrap_estimate,
    "replace": _replace_estimate,
    "format": _format_estimate,
    "batch": lambda v, p, k: (
        as_int(_param(p, k, 0, "linecount", 0))
        if _param(p, k, 1, "fill_with", None) is not None
        else 0
    ),
    "slice": lambda v, p, k: as_int(_param(p, k, 0, "slices", 0)),
    "tojson": lambda v, p, k: limits.measure(v, MAX_VALUE, as_int(_param(p, k, 0, "indent", 0))),
    "pprint": lambda v, p, k: limits.measure(v, MAX_VALUE, 1),
}


def guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its input measured, its amplification estimated, its result
    charged (a filter that hands its input back is not charged)."""
    offset = 0 if getattr(func, "jinja_pass_arg", None) is None else 1  # context first?
    limit = MAX_VALUE if name in _STRINGIFIERS else MAX_INPUT
    check_input = name not in _CONSTANT_TIME
    estimate = _ESTIMATES.get(name)
    what = f"the result of the {name} filter"

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) <= offset:
            return func(*args, **kwargs)  # Jinja reports the missing argument
        value = args[offset]
        if check_input:
            limits.require_measure(value, f"the input of the {name} filter", limit)
        if estimate is not None:
            limits.require(estimate(value, args[offset + 1 :], kwargs), what)
        result = func(*args, **kwargs)
        return result if result is value else limits.built(result, what)

    return guarded


def join_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    """The join filter, with its items counted before anything is joined."""

    @functools.wraps(original)
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(limits.metered_items(value))
        limits.require(limits.join_estimate(d, items), "the result of the join filter")
        return original(eval_ctx, items, d, attribute)

    return join


def sum_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    """The sum filter; sequences are concatenated in linear time, not pairwise."""

    @pass_environment
    def do_sum(
        environment: Environment, iterable: Any, attribute: Any = None, start: Any = 0
    ) -> Any:
        if not isinstance(start, list | tuple):
            return original(environment, iterable, attribute, start)
        if attribute is not None:
            iterable = map(make_attrgetter(environment, attribute), iterable)
        items = list(start)
        for part in limits.metered_items(iterable):
            if type(part) is not type(start):
                kind = type(start).__name__
                raise TypeError(f'can only concatenate {kind} (not "{type(part).__name__}")')
            limits.require(len(items) + len(part), "the result of the sum filter")
            items.extend(part)
        return items if isinstance(start, list) else tuple(items)

    return do_sum
