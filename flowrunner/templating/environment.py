"""The one sandboxed Jinja environment, built on first use, and the turning of a
checked tree into Python on a template's first render."""

from __future__ import annotations

import functools
import warnings

from jinja2 import StrictUndefined, nodes
from jinja2.environment import Template, TemplateExpression

from flowrunner.templating import limits
from flowrunner.templating.filters import guard_filter, join_filter, sum_filter
from flowrunner.templating.references import HELPER
from flowrunner.templating.render import finalize_output
from flowrunner.templating.sandbox import (
    LOOP_ITEMS,
    SOFT_HELPER,
    Sandbox,
    lipsum,
    reference_helper,
    reference_or_undefined,
    safe_range,
)


@functools.cache
def sandbox_environment() -> Sandbox:
    """The one Jinja environment, built on first use."""
    env = Sandbox(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=finalize_output,
        keep_trailing_newline=True,  # a block scalar's last newline is part of the value
    )
    env.filters["join"] = join_filter(env.filters["join"])
    env.filters["sum"] = sum_filter(env.filters["sum"])
    for name, func in list(env.filters.items()):
        env.filters[name] = guard_filter(name, func)
    env.globals["range"] = safe_range
    env.globals["lipsum"] = lipsum
    env.globals[HELPER] = reference_helper
    env.globals[SOFT_HELPER] = reference_or_undefined
    env.globals[LOOP_ITEMS] = limits.metered_items
    return env


def compile_python(tree: nodes.Template) -> Template:
    """The template compiled to Python. Python may warn about the code Jinja writes
    (``2[1:2]`` is "not subscriptable"): the render says so, the compiler must not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return sandbox_environment().from_string(tree)


def single_output(tree: nodes.Template) -> nodes.Expr | None:
    """The one expression a ``{{ expr }}``-only template outputs, else None."""
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    return body[0].nodes[0]


def compile_expression(tree: nodes.Template) -> TemplateExpression:
    node = single_output(tree)
    assert node is not None  # only single-output trees become an Expression
    assign = nodes.Assign(nodes.Name("result", "store"), node, lineno=1)
    template = compile_python(nodes.Template([assign], lineno=1))
    return TemplateExpression(template, undefined_to_none=False)
