"""The one sandboxed Jinja environment, built on first use; the turning of a checked
tree into Python on a template's first render; and the checks that what a template
gives is data."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.environment import Template, TemplateExpression
from markupsafe import Markup

from flowrunner.templating import limits
from flowrunner.templating.filters import guard_filter, join_filter, sum_filter
from flowrunner.templating.references import HELPER, VARIABLES, Variables
from flowrunner.templating.render import NotData, collect_output, format_text, limit_output
from flowrunner.templating.sandbox import (
    LOOP_ITEMS,
    SOFT_HELPER,
    Sandbox,
    lipsum,
    reference_helper,
    reference_or_undefined,
    safe_range,
)


def as_data(value: Any) -> Any:
    """A typed result as plain data: containers copied with tuples as lists, Markup as
    str; an undefined value raises its reason, anything else raises NotData."""
    if isinstance(value, dict | list | tuple):
        limits.require_measure(value, "the result")
    if isinstance(value, str | int | float | type(None)):
        return str.__str__(value) if isinstance(value, Markup) else value
    if isinstance(value, dict):
        return {key: as_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_data(item) for item in value]
    _not_data(value)


def finalize_output(value: Any) -> str:
    # containers go to JSON, where an undefined member still raises (through str())
    if isinstance(value, dict | list | tuple):
        limits.require_measure(value, "a rendered value")
    if isinstance(value, str | int | float | type(None) | dict | list | tuple):
        return format_text(value)
    _not_data(value)


def _not_data(value: Any) -> NoReturn:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises its reason (undefined, or unsafe)
    raise NotData(f"the template gives a {type(value).__name__} object, not data")


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


def expression_renderer(tree: nodes.Template) -> Callable[[Variables], Any]:
    """An ``{{ expr }}``-only tree as a function of the variables giving its value, data."""
    expression = compile_expression(tree)

    def render(variables: Variables) -> Any:
        value = as_data(expression({VARIABLES: variables}))
        return limit_output(value) if isinstance(value, str) else value

    return render


def text_renderer(tree: nodes.Template) -> Callable[[Variables], str]:
    """A tree as a function of the variables giving its rendered text."""
    template = compile_python(tree)

    def render(variables: Variables) -> str:
        return collect_output(template.generate({VARIABLES: variables}))

    return render
