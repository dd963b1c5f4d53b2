"""The one sandboxed Jinja environment, built on first use, and the turning of a
checked tree into Python on a template's first render."""

from __future__ import annotations

import functools
import warnings

from jinja2 import StrictUndefined, nodes
from jinja2.environment import Template, TemplateExpression

from flowrunner.templating import limits
from flowrunner.templating.filters import _guard_filter, _join_filter, _sum_filter
from flowrunner.templating.references import HELPER
from flowrunner.templating.render import _finalize
from flowrunner.templating.sandbox import (
    _LOOP_ITEMS,
    _SOFT_HELPER,
    _lipsum,
    _reference,
    _reference_or_undefined,
    _safe_range,
    _Sandbox,
)


@functools.cache
def _environment() -> _Sandbox:
    """The one Jinja environment, built on first use."""
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,  # a block scalar's last newline is part of the value
    )
    env.filters["join"] = _join_filter(env.filters["join"])
    env.filters["sum"] = _sum_filter(env.filters["sum"])
    for name, func in list(env.filters.items()):
        env.filters[name] = _guard_filter(name, func)
    env.globals["range"] = _safe_range
    env.globals["lipsum"] = _lipsum
    env.globals[HELPER] = _reference
    env.globals[_SOFT_HELPER] = _reference_or_undefined
    env.globals[_LOOP_ITEMS] = limits.metered_items
    return env


def _python(tree: nodes.Template) -> Template:
    """The template compiled to Python. Python may warn about the code Jinja writes
    (``2[1:2]`` is "not subscriptable"): the render says so, the compiler must not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return _environment().from_string(tree)


def _single_output(tree: nodes.Template) -> nodes.Expr | None:
    """The one expression a ``{{ expr }}``-only template outputs, else None."""
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    return body[0].nodes[0]


def _expression(tree: nodes.Template) -> TemplateExpression:
    node = _single_output(tree)
    assert node is not None  # only single-output trees become an Expression
    assign = nodes.Assign(nodes.Name("result", "store"), node, lineno=1)
    template = _python(nodes.Template([assign], lineno=1))
    return TemplateExpression(template, undefined_to_none=False)
