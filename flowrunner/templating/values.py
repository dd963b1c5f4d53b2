"""The compiled values: immutable shapes, reusable across executions, each rendering
itself for one execution's variables as cheaply as its shape allows. Importing it
imports no jinja2: a Jinja shape is made by :mod:`flowrunner.templating.parsing` and
turns its tree into Python on its first render."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from flowrunner.errors import UndefinedReference, Where
from flowrunner.frozen import frozen
from flowrunner.templating import limits
from flowrunner.templating.references import Missing, Reference, Variables, resolve
from flowrunner.templating.render import (
    MAX_OUTPUT,
    format_text,
    limit_output,
    output_too_large,
    render_error,
)

if TYPE_CHECKING:
    from jinja2 import nodes

Renderer = Callable[[Variables], Any]  # a Jinja template as Python, for its variables


class Compiled(Protocol):
    """A compiled value: immutable, reusable across executions."""

    @property
    def references(self) -> tuple[Reference, ...]:
        """Every reference in it, in source order."""

    @property
    def is_constant(self) -> bool:
        """True when rendering it reads no variable."""

    def render(self, variables: Variables) -> Any:
        """The value for these variables; raises TemplateError / UndefinedReference."""


class _Rendered:
    __slots__ = ()
    is_constant: ClassVar[bool] = False


@frozen
class Constant:
    """A value without references or Jinja: rendered as itself."""

    value: Any
    references: ClassVar[tuple[Reference, ...]] = ()
    is_constant: ClassVar[bool] = True

    def render(self, variables: Variables) -> Any:
        return self.value


@frozen
class ReferenceValue(_Rendered):
    """Exactly one reference: the value it names, with its type."""

    reference: Reference
    where: Where

    @property
    def references(self) -> tuple[Reference, ...]:
        return (self.reference,)

    def render(self, variables: Variables) -> Any:
        # the value itself, not a copy: values are data and nobody mutates them in place
        try:
            return resolve(variables, self.reference.scope, self.reference.path)
        except Missing as exc:
            raise UndefinedReference(exc.reference, exc.suggestion, self.where) from exc


@frozen
class Text(_Rendered):
    """Literals and references joined into text, without Jinja."""

    parts: tuple[str | Reference, ...]
    where: Where

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(part for part in self.parts if isinstance(part, Reference))

    def render(self, variables: Variables) -> str:
        try:
            texts, size = [], 0
            for part in self.parts:
                text = part if isinstance(part, str) else _reference_text(variables, part)
                size += len(text)
                if size > MAX_OUTPUT:  # before joining: a value may be repeated many times
                    raise output_too_large()
                texts.append(text)
            return limit_output("".join(texts))
        except Exception as exc:
            raise render_error(exc, self.where) from exc


def _reference_text(variables: Variables, reference: Reference) -> str:
    value = resolve(variables, reference.scope, reference.path)
    if not isinstance(value, str) and limits.measure(value, MAX_OUTPUT) > MAX_OUTPUT:
        raise output_too_large()  # before json.dumps builds it
    return format_text(value)


@frozen
class _Jinja(_Rendered):
    """A checked Jinja tree, turned into Python on its first render, then reused."""

    references: tuple[Reference, ...]
    where: Where
    tree: nodes.Template
    _code: list[Renderer] = field(default_factory=list, compare=False, repr=False)

    def _build(self) -> Renderer:
        raise NotImplementedError

    def render(self, variables: Variables) -> Any:
        token = limits.start()
        try:
            if not self._code:
                self._code.append(self._build())
            return self._code[0](variables)
        except Exception as exc:  # a template may fail in any way Python can
            raise render_error(exc, self.where) from exc
        finally:
            limits.stop(token)


@frozen
class Expression(_Jinja):
    """``{{ expr }}`` alone: the expression's value, with its type."""

    def _build(self) -> Renderer:
        from flowrunner.templating.environment import expression_renderer

        return expression_renderer(self.tree)


@frozen
class JinjaText(_Jinja):
    """Any other template: rendered text."""

    def _build(self) -> Renderer:
        from flowrunner.templating.environment import text_renderer

        return text_renderer(self.tree)


@frozen
class MappingValue:
    """A dict of compiled values (keys are not templated)."""

    items: tuple[tuple[Any, Compiled], ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(ref for _, value in self.items for ref in value.references)

    @property
    def is_constant(self) -> bool:
        return all(value.is_constant for _, value in self.items)

    def render(self, variables: Variables) -> dict[Any, Any]:
        return {key: value.render(variables) for key, value in self.items}


@frozen
class ListValue:
    """A list of compiled values."""

    items: tuple[Compiled, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(ref for value in self.items for ref in value.references)

    @property
    def is_constant(self) -> bool:
        return all(value.is_constant for value in self.items)

    def render(self, variables: Variables) -> list[Any]:
        return [value.render(variables) for value in self.items]
