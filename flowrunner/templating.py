"""Templates: flow strings compiled once, rendered per execution, in a sandbox.

A compiled string is one of five shapes, cheapest first:

* ``Constant``       no reference, no Jinja (``$$`` already read as ``$``)
* ``ReferenceValue`` exactly one reference: a dict walk, keeps the value's type
* ``Text``           literals and references: joined, no Jinja
* ``Expression``     exactly one ``{{ expression }}``: Jinja, keeps the value's type
* ``JinjaText``      anything else with ``{{ }}`` or ``{% %}``: Jinja, renders text

Dicts and lists become ``MappingValue`` / ``ListValue`` of compiled values (keys are
not templated). Inside ``{{ }}`` and ``{% %}`` each reference is rewritten into a call of
one helper that walks the variables as the fast paths do, so an unset value raises
UndefinedReference with a suggestion; only under ``| default(...)`` and ``is defined`` /
``is undefined`` is an unset value Jinja's undefined.

Everything jinja2 lives in this module; its exceptions become TemplateError with these
rule ids:

* ``template-syntax``     the template does not parse (positioned inside the string)
* ``unknown-scope``       ``$name`` that is not a reference, or a bare name in ``{{ }}``
* ``template-unsafe``     the sandbox refused an attribute, a call or a range
* ``template-too-large``  rendered text over 64 KiB, or ``*`` / ``**`` results too big
* ``template-render``     anything else that failed while rendering
* ``undefined-key``       (UndefinedReference) a reference to something unset
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NoReturn, Protocol

from jinja2 import StrictUndefined, Undefined, meta, nodes, pass_context
from jinja2.environment import Template, TemplateExpression
from jinja2.exceptions import SecurityError, TemplateRuntimeError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment
from markupsafe import Markup

from flowrunner.errors import Mark, TemplateError, UndefinedReference, Where
from flowrunner.references import (
    HELPER,
    SCOPES,
    Construct,
    JinjaSource,
    Literal,
    Missing,
    Piece,
    Reference,
    ScanError,
    Variables,
    resolve,
    scan,
    suggest,
    to_jinja,
)

__all__ = [
    "SCOPES",
    "Compiled",
    "Reference",
    "Variables",
    "compile_value",
    "format_text",
    "offset_mark",
    "suggest",
]

MAX_OUTPUT = 64 * 1024
_MAX_INT_BITS = 10_000  # below Python's 4300-digit limit on int -> str
_VARIABLES = "_variables"  # the render-context entry HELPER reads


def format_text(value: Any) -> str:
    """The text form of a value: strings as they are, numbers as JSON, booleans
    ``true``/``false``, None as the empty string, dicts and lists as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | dict | list | tuple):
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # keys JSON cannot hold, or a cycle
            return str(value)
    return str(value)


def offset_mark(mark: Mark, source: str, offset: int) -> Mark:
    """The position of character ``offset`` of a scalar whose value is ``source`` and
    which starts at ``mark``. One-line plain and quoted scalars are exact (escapes
    aside); for block scalars the content starts on the line after the indicator, and
    the column counts from the content's indentation, which the mark does not say."""
    offset = max(0, min(offset, len(source)))
    before = source[:offset]
    newlines = before.count("\n")
    in_line = offset - (before.rfind("\n") + 1)
    if mark.style in ("|", ">"):
        return Mark(mark.line + 1 + newlines, in_line + 1, mark.style)
    if newlines:
        return Mark(mark.line + newlines, in_line + 1, mark.style)
    quote = 1 if mark.style in ("'", '"') else 0
    return Mark(mark.line, mark.column + quote + offset, mark.style)


# --- the compiled shapes ---------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Constant:
    value: Any
    references: ClassVar[tuple[Reference, ...]] = ()
    is_constant: ClassVar[bool] = True

    def render(self, variables: Variables) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class ReferenceValue(_Rendered):
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


@dataclass(frozen=True, slots=True)
class Text(_Rendered):
    parts: tuple[str | Reference, ...]
    where: Where

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(part for part in self.parts if isinstance(part, Reference))

    def render(self, variables: Variables) -> str:
        try:
            text = "".join(
                [
                    part
                    if isinstance(part, str)
                    else format_text(resolve(variables, part.scope, part.path))
                    for part in self.parts
                ]
            )
            return _limit_output(text)
        except Exception as exc:
            raise _render_error(exc, self.where) from exc


@dataclass(frozen=True, slots=True)
class Expression(_Rendered):
    references: tuple[Reference, ...]
    where: Where
    expression: TemplateExpression

    def render(self, variables: Variables) -> Any:
        try:
            value = _as_data(self.expression({_VARIABLES: variables}))
            return _limit_output(value) if isinstance(value, str) else value
        except Exception as exc:  # a template may fail in any way Python can
            raise _render_error(exc, self.where) from exc


@dataclass(frozen=True, slots=True)
class JinjaText(_Rendered):
    references: tuple[Reference, ...]
    where: Where
    template: Template

    def render(self, variables: Variables) -> str:
        try:
            return _collect(self.template.generate({_VARIABLES: variables}))
        except Exception as exc:  # a template may fail in any way Python can
            raise _render_error(exc, self.where) from exc


@dataclass(frozen=True, slots=True)
class MappingValue:
    items: tuple[tuple[Any, Compiled], ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(ref for _, value in self.items for ref in value.references)

    @property
    def is_constant(self) -> bool:
        return all(value.is_constant for _, value in self.items)

    def render(self, variables: Variables) -> dict[Any, Any]:
        return {key: value.render(variables) for key, value in self.items}


@dataclass(frozen=True, slots=True)
class ListValue:
    items: tuple[Compiled, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(ref for value in self.items for ref in value.references)

    @property
    def is_constant(self) -> bool:
        return all(value.is_constant for value in self.items)

    def render(self, variables: Variables) -> list[Any]:
        return [value.render(variables) for value in self.items]


# --- compiling ---------------------------------------------------------------------------


def compile_value(value: Any, where: Where) -> Compiled:
    """Compile a value of a flow: a string into a template, a dict or list into a
    structure of compiled values (keys are not templated), anything else into a
    constant.

    Raises TemplateError (rules ``template-syntax``, ``unknown-scope``,
    ``template-unsafe``) with ``where.mark`` moved to the problem inside the string.
    Strings nested in a dict or list keep the container's mark and get a field path
    (``params.order_hint``, ``items[0]``).
    """
    return _compile(value, where, nested=False)


def _compile(value: Any, where: Where, *, nested: bool) -> Compiled:
    if isinstance(value, str):
        return _compile_str(value, where, nested=nested)
    if isinstance(value, Mapping):
        return MappingValue(
            tuple(
                (key, _compile(item, _child(where, f".{key}"), nested=True))
                for key, item in value.items()
            )
        )
    if isinstance(value, list | tuple):
        return ListValue(
            tuple(
                _compile(item, _child(where, f"[{index}]"), nested=True)
                for index, item in enumerate(value)
            )
        )
    return Constant(value)


def _child(where: Where, suffix: str) -> Where:
    if where.field is None:
        return replace(where, field=suffix.lstrip("."))
    return replace(where, field=where.field + suffix)


def _compile_str(text: str, where: Where, *, nested: bool) -> Compiled:
    try:
        pieces = scan(text)
        if not any(isinstance(piece, Construct) for piece in pieces):
            return _compile_plain(pieces, where)
        inner = _single_expression(pieces)
        bare = _bare_reference(inner) if inner is not None else None
        if bare is not None:
            return ReferenceValue(bare, where)
        return _compile_jinja(text, pieces, where, expression=inner is not None)
    except ScanError as exc:
        if where.mark is not None and not nested:
            where = replace(where, mark=offset_mark(where.mark, text, exc.offset))
        raise TemplateError(exc.message, where, exc.rule) from exc


def _compile_plain(pieces: Iterable[Piece], where: Where) -> Compiled:
    parts: list[str | Reference] = []
    for piece in pieces:
        if isinstance(piece, Literal) and parts and isinstance(parts[-1], str):
            parts[-1] += piece.text
        elif isinstance(piece, Literal):
            parts.append(piece.text)
        elif isinstance(piece, Reference):
            parts.append(piece)
    if not parts:
        return Constant("")
    if len(parts) == 1:
        only = parts[0]
        return Constant(only) if isinstance(only, str) else ReferenceValue(only, where)
    return Text(tuple(parts), where)


def _single_expression(pieces: tuple[Piece, ...]) -> tuple[Literal | Reference, ...] | None:
    """The inside of the string's only piece when that is a whole ``{{ }}``."""
    if len(pieces) != 1:
        return None
    only = pieces[0]
    if isinstance(only, Construct) and only.opener == "{{" and only.closed:
        return only.inner
    return None


_BEFORE = re.compile(r"-?\s*")  # Jinja's whitespace control sits right at the braces
_AFTER = re.compile(r"\s*-?")


def _bare_reference(inner: tuple[Literal | Reference, ...]) -> Reference | None:
    found = [index for index, piece in enumerate(inner) if isinstance(piece, Reference)]
    if len(found) != 1:
        return None
    index = found[0]
    before = "".join(piece.text for piece in inner[:index])
    after = "".join(piece.text for piece in inner[index + 1 :])
    if _BEFORE.fullmatch(before) and _AFTER.fullmatch(after):
        reference = inner[index]
        assert isinstance(reference, Reference)
        return reference
    return None


def _compile_jinja(
    text: str, pieces: tuple[Piece, ...], where: Where, *, expression: bool
) -> Compiled:
    source = to_jinja(pieces)
    references = tuple(_all_references(pieces))
    env = _environment()
    try:
        tree = env.parse(source.text)
        _check_tree(tree, text, source)
        _soften(tree)
        compiled = _expression(tree) if expression else None
        if compiled is not None:
            return Expression(references, where, compiled)
        return JinjaText(references, where, env.from_string(tree))
    except TemplateSyntaxError as exc:
        offset = _syntax_offset(exc, source, text)
        raise ScanError(_syntax_message(exc), offset, "template-syntax") from exc
    except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError) as exc:
        # deep nesting or huge literals that Jinja's parser or Python's compiler refuse
        first = source.constructs[0][0].start if source.constructs else 0
        message = f"template syntax error: template too complex ({type(exc).__name__})"
        raise ScanError(message, first, "template-syntax") from exc


def _all_references(pieces: Iterable[Piece]) -> Iterator[Reference]:
    for piece in pieces:
        if isinstance(piece, Reference):
            yield piece
        elif isinstance(piece, Construct):
            yield from (inner for inner in piece.inner if isinstance(inner, Reference))


def _expression(tree: nodes.Template) -> TemplateExpression | None:
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    assign = nodes.Assign(nodes.Name("result", "store"), body[0].nodes[0], lineno=1)
    template = _environment().from_string(nodes.Template([assign], lineno=1))
    return TemplateExpression(template, undefined_to_none=False)


# --- static checks on the parsed template ----------------------------------------------


def _check_tree(tree: nodes.Template, text: str, source: JinjaSource) -> None:
    """Refuse what the sandbox would refuse anyway, at compile time and with a position."""
    for getattr_node in tree.find_all(nodes.Getattr):
        if getattr_node.attr.startswith("__"):
            _refuse_attribute(getattr_node.attr, text, source)
    for getitem in tree.find_all(nodes.Getitem):
        key = getitem.arg
        if isinstance(key, nodes.Const) and isinstance(key.value, str):
            if key.value.startswith("__"):
                _refuse_attribute(key.value, text, source)
    for filter_node in tree.find_all(nodes.Filter):
        if filter_node.name == "attr":
            offset = _find(source, text, r"\|\s*attr\b")
            raise ScanError(
                "unsafe template: the attr filter is not allowed", offset, "template-unsafe"
            )
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        tag = type(node).__name__.lower().replace("fromimport", "from")
        offset = _find(source, text, rf"\b{tag}\b")
        raise ScanError(
            f"template syntax error: {{% {tag} %}} is not supported", offset, "template-syntax"
        )
    _check_names(tree, text, source)


_SOFT_HELPER = "_ref_or_undefined"


def _soften(tree: nodes.Template) -> None:
    """Let ``$x | default(...)`` and ``$x is defined`` see an unset value as Jinja's
    undefined instead of failing: only there may a reference be unset."""
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        names = ("default", "d") if isinstance(node, nodes.Filter) else ("defined", "undefined")
        call = node.node
        if node.name in names and isinstance(call, nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == HELPER:
                call.node = nodes.Name(_SOFT_HELPER, "load", lineno=call.node.lineno)


def _refuse_attribute(name: str, text: str, source: JinjaSource) -> None:
    offset = _find(source, text, re.escape(name))
    message = f"unsafe template: access to attribute '{name}' is not allowed"
    raise ScanError(message, offset, "template-unsafe")


def _check_names(tree: nodes.Template, text: str, source: JinjaSource) -> None:
    # a bare name is almost always a reference written without its `$`
    unknown = meta.find_undeclared_variables(tree) - set(_environment().globals)
    if not unknown:
        return
    where = {name: _find(source, text, rf"(?<![\w.$]){re.escape(name)}\b") for name in unknown}
    name = min(unknown, key=lambda n: (where[n], n))
    message = (
        f"unknown name '{name}' in template; references start with $: "
        "$call.<name>, $flow.key.<name>, $user.key.<name>, $sys.<name>"
    )
    raise ScanError(message, where[name], "unknown-scope")


def _find(source: JinjaSource, text: str, pattern: str) -> int:
    """The offset of the first match of ``pattern`` inside a construct (best effort)."""
    regex = re.compile(pattern)
    for construct, _ in source.constructs:
        match = regex.search(text, construct.start, construct.end)
        if match:
            return match.start()
    return source.constructs[0][0].start if source.constructs else 0


# --- positioning syntax errors -----------------------------------------------------------

_UNEXPECTED_CHAR = re.compile(r"unexpected char .* at (\d+)", re.S)
_NO_SUCH = re.compile(r"No (filter|test) named '([^']*)'")


def _syntax_message(exc: TemplateSyntaxError) -> str:
    message = re.sub(r" at \d+$", "", exc.message or "invalid syntax")
    message = message.replace(f"'{HELPER}'", "a $ reference")
    unknown = _NO_SUCH.match(message)
    if unknown:
        kind, name = unknown.groups()
        known = _environment().filters if kind == "filter" else _environment().tests
        near = suggest(name, known)
        message = message.rstrip(".") + (f" (did you mean '{near}'?)" if near else "")
    return "template syntax error: " + " ".join(message.split())


def _syntax_offset(exc: TemplateSyntaxError, source: JinjaSource, text: str) -> int:
    message = exc.message or ""
    char = _UNEXPECTED_CHAR.fullmatch(message)
    if char:
        return source.original_offset(int(char.group(1)))
    unknown = _NO_SUCH.match(message)
    if unknown:
        return _find(source, text, rf"\b{re.escape(unknown.group(2))}\b")
    constructs = [construct for construct, _ in source.constructs]
    unclosed = [construct for construct in constructs if not construct.closed]
    culprit = unclosed[0] if unclosed else _first_failing(source)
    culprit = culprit or _open_block(constructs, text)
    if culprit is not None:
        return culprit.start
    return constructs[0].start if constructs else 0


def _first_failing(source: JinjaSource) -> Construct | None:
    """The first construct at which a prefix of the template stops parsing (binary
    search: once a prefix fails for a reason other than its end, longer ones do too)."""
    ends = source.constructs
    if not ends or not _fails_early(source.text[: ends[-1][1]]):
        return None
    low, high = 0, len(ends) - 1
    while low < high:
        middle = (low + high) // 2
        if _fails_early(source.text[: ends[middle][1]]):
            high = middle
        else:
            low = middle + 1
    return ends[low][0]


def _fails_early(prefix: str) -> bool:
    try:
        _environment().parse(prefix)
    except TemplateSyntaxError as exc:
        return not (exc.message or "").lower().startswith("unexpected end of template")
    except Exception:  # recursion and the like: as good as a failure here
        return True
    return False


_BLOCK_TAGS = frozenset({"for", "if", "macro", "call", "filter", "with", "autoescape", "set"})
_TAG = re.compile(r"[-+]?\s*([A-Za-z_]\w*)")


def _open_block(constructs: list[Construct], text: str) -> Construct | None:
    """The innermost ``{% %}`` block left open at the end of the template."""
    stack: list[Construct] = []
    for construct in constructs:
        inside = text[construct.start + 2 : construct.end - 2]
        tag = _TAG.match(inside) if construct.opener == "{%" else None
        if tag is None:
            continue
        name = tag.group(1)
        if name.startswith("end") and stack:
            stack.pop()
        elif name in _BLOCK_TAGS and not (name == "set" and "=" in inside):
            stack.append(construct)
    return stack[-1] if stack else None


# --- rendering --------------------------------------------------------------------------


class _TooLarge(Exception):
    """Output or a computed value over the limits."""


class _NotData(Exception):
    """A template produced something that is not JSON-like data."""


def _as_data(value: Any) -> Any:
    """A typed result as plain data: containers copied with tuples as lists, Markup as
    str; an undefined value raises its reason, anything else raises _NotData."""
    if isinstance(value, str | int | float | type(None)):
        return str.__str__(value) if isinstance(value, Markup) else value
    if isinstance(value, dict):
        return {key: _as_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_data(item) for item in value]
    _not_data(value)


def _finalize(value: Any) -> str:
    # containers go to JSON, where an undefined member still raises (through str())
    if isinstance(value, str | int | float | type(None) | dict | list | tuple):
        return format_text(value)
    _not_data(value)


def _not_data(value: Any) -> NoReturn:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises its reason (undefined, or unsafe)
    raise _NotData(f"the template gives a {type(value).__name__} object, not data")


def _limit_output(text: str) -> str:
    # a character is at least one UTF-8 byte: short texts need no encoding
    if len(text) > MAX_OUTPUT // 4:
        if len(text) > MAX_OUTPUT or len(text.encode("utf-8", "surrogatepass")) > MAX_OUTPUT:
            raise _TooLarge("rendered text is over 64 KiB")
    return text


def _collect(chunks: Iterator[str]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:  # stop early: a loop may be producing without end
            raise _TooLarge("rendered text is over 64 KiB")
        parts.append(chunk)
    return _limit_output("".join(parts))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_PLAIN_REASONS: dict[type[BaseException], str] = {
    RecursionError: "recursion too deep",
    MemoryError: "out of memory",
    OverflowError: "number out of range",
    ZeroDivisionError: "division by zero",
}


def _render_error(exc: Exception, where: Where) -> TemplateError:
    """The TemplateError for an exception raised while rendering; messages stay short
    and never quote values (only Jinja's and Python's descriptions of types)."""
    if isinstance(exc, Missing):
        return UndefinedReference(exc.reference, exc.suggestion, where)
    if isinstance(exc, _TooLarge):
        return TemplateError(str(exc), where, "template-too-large")
    if isinstance(exc, SecurityError):
        return TemplateError(f"unsafe template: {_short(exc.message)}", where, "template-unsafe")
    return TemplateError(f"could not render template: {_reason(exc)}", where, "template-render")


def _reason(exc: Exception) -> str:
    for kind, reason in _PLAIN_REASONS.items():
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, TemplateRuntimeError):
        return _short(exc.message)
    if isinstance(exc, TypeError | _NotData):
        return _short(str(exc))
    return type(exc).__name__  # e.g. ValueError: its message may quote a value


def _short(message: str | None) -> str:
    text = _ADDRESS.sub("", " ".join((message or "").split()))
    return text if len(text) <= 200 else text[:197] + "..."


# --- the Jinja environment ----------------------------------------------------------------


@pass_context
def _reference(context: Context, scope: str, *path: str) -> Any:
    return resolve(context.parent[_VARIABLES], scope, path)


@pass_context
def _reference_or_undefined(context: Context, scope: str, *path: str) -> Any:
    try:
        return resolve(context.parent[_VARIABLES], scope, path)
    except Missing as exc:
        return context.environment.undefined(hint=f"undefined variable {exc.reference}")


def _safe_range(*args: int) -> range:
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items")
    return numbers


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        if right > 0 and abs(left) > 1 and right * abs(left).bit_length() > _MAX_INT_BITS:
            raise _TooLarge("value too large: the result of ** is over the limit")
    elif operator == "*":
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                if len(sequence) * count > MAX_OUTPUT:
                    raise _TooLarge("value too large: the result of * is over 64 KiB")
        if isinstance(left, int) and isinstance(right, int):
            if abs(left).bit_length() + abs(right).bit_length() > _MAX_INT_BITS:
                raise _TooLarge("value too large: the result of * is over the limit")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``*`` and ``**`` bounded: ``'a' * 10**9`` and
    ``10 ** 100000000`` would exhaust memory or time before any other limit applied."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)


@functools.cache
def _environment() -> _Sandbox:
    """The one Jinja environment, built on first use."""
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=False,
        finalize=_finalize,
        keep_trailing_newline=True,  # a block scalar's last newline is part of the value
    )
    env.globals["range"] = _safe_range
    env.globals[HELPER] = _reference
    env.globals[_SOFT_HELPER] = _reference_or_undefined
    return env
