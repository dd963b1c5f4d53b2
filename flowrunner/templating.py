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
* ``template-too-large``  a template over 64 KiB, rendered text or a value it builds
                          over 64 KiB (see :mod:`flowrunner.limits`)
* ``template-timeout``    a render over its time or work budget
* ``template-render``     anything else that failed while rendering
* ``undefined-key``       (UndefinedReference) a reference to something unset
"""

from __future__ import annotations

import functools
import json
import re
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NoReturn, Protocol, cast

from jinja2 import StrictUndefined, Undefined, nodes, pass_context, pass_environment
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.environment import Environment, Template, TemplateExpression
from jinja2.exceptions import SecurityError, TemplateRuntimeError, TemplateSyntaxError
from jinja2.filters import make_attrgetter
from jinja2.optimizer import optimize
from jinja2.runtime import Context
from jinja2.sandbox import (
    MAX_RANGE,
    ImmutableSandboxedEnvironment,
    SandboxedFormatter,
)
from jinja2.utils import generate_lorem_ipsum
from markupsafe import EscapeFormatter, Markup

from flowrunner import limits
from flowrunner.errors import Mark, TemplateError, UndefinedReference, Where
from flowrunner.limits import MAX_INPUT, MAX_VALUE, LimitExceeded
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

MAX_OUTPUT = MAX_VALUE
MAX_SOURCE = 64 * 1024  # characters of one Jinja template: parsing is linear, but slow
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
            texts, size = [], 0
            for part in self.parts:
                text = part if isinstance(part, str) else _reference_text(variables, part)
                size += len(text)
                if size > MAX_OUTPUT:  # before joining: a value may be repeated many times
                    raise _output_too_large()
                texts.append(text)
            return _limit_output("".join(texts))
        except Exception as exc:
            raise _render_error(exc, self.where) from exc


def _reference_text(variables: Variables, reference: Reference) -> str:
    value = resolve(variables, reference.scope, reference.path)
    if not isinstance(value, str) and limits.measure(value, MAX_OUTPUT) > MAX_OUTPUT:
        raise _output_too_large()  # before json.dumps builds it
    return format_text(value)


@dataclass(frozen=True, slots=True)
class Expression(_Rendered):
    references: tuple[Reference, ...]
    where: Where
    tree: nodes.Template  # checked; turned into Python on the first render
    _code: list[TemplateExpression] = field(default_factory=list, compare=False, repr=False)

    def render(self, variables: Variables) -> Any:
        token = limits.start()
        try:
            if not self._code:
                self._code.append(_expression(self.tree))
            value = _as_data(self._code[0]({_VARIABLES: variables}))
            return _limit_output(value) if isinstance(value, str) else value
        except Exception as exc:  # a template may fail in any way Python can
            raise _render_error(exc, self.where) from exc
        finally:
            limits.stop(token)


@dataclass(frozen=True, slots=True)
class JinjaText(_Rendered):
    references: tuple[Reference, ...]
    where: Where
    tree: nodes.Template  # checked; turned into Python on the first render
    _code: list[Template] = field(default_factory=list, compare=False, repr=False)

    def render(self, variables: Variables) -> str:
        token = limits.start()
        try:
            if not self._code:
                self._code.append(_python(self.tree))
            return _collect(self._code[0].generate({_VARIABLES: variables}))
        except Exception as exc:  # a template may fail in any way Python can
            raise _render_error(exc, self.where) from exc
        finally:
            limits.stop(token)


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
    if len(text) > MAX_SOURCE:
        message = f"template is {len(text)} characters; the limit is {MAX_SOURCE} (64 KiB)"
        raise ScanError(message, 0, limits.TOO_LARGE)
    source = to_jinja(pieces)
    references = tuple(_all_references(pieces))
    env = _environment()
    try:
        tree = env.parse(source.text)
        index = _index(tree)
        _check_tree(index, text, source)
        _check_callables(index, env)
        _soften(index)
        _meter_loops(index)
        # Constant folding is where compiling can fail the way rendering would
        # (`''.x ~ 'a'`): do it now; generating Python waits for the first render, so
        # that checking a thousand flows costs a parse per template, not a compile.
        tree = cast(nodes.Template, optimize(tree, env))
        if expression and _single_output(tree) is not None:
            return Expression(references, where, tree)
        return JinjaText(references, where, tree)
    except TemplateSyntaxError as exc:
        offset = _syntax_offset(exc, source, text)
        raise ScanError(_syntax_message(exc), offset, "template-syntax") from exc
    except TemplateRuntimeError as exc:
        # Jinja folds constant parts while compiling, and folding `''.x ~ 'a'` or
        # `'a' if ''.x else 'b'` raises what rendering would: report that, here
        first = source.constructs[0][0].start if source.constructs else 0
        error = _render_error(exc, Where())
        raise ScanError(error.bare_message, first, error.rule) from exc
    except (RecursionError, MemoryError, SyntaxError, ValueError, OverflowError) as exc:
        # deep nesting or huge literals that Jinja's parser or Python's compiler refuse
        first = source.constructs[0][0].start if source.constructs else 0
        message = f"template syntax error: template too complex ({type(exc).__name__})"
        raise ScanError(message, first, "template-syntax") from exc


def _python(tree: nodes.Template) -> Template:
    """The template compiled to Python. Python may warn about the code Jinja writes
    (``2[1:2]`` is "not subscriptable"): the render says so, the compiler must not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return _environment().from_string(tree)


def _all_references(pieces: Iterable[Piece]) -> Iterator[Reference]:
    for piece in pieces:
        if isinstance(piece, Reference):
            yield piece
        elif isinstance(piece, Construct):
            yield from (inner for inner in piece.inner if isinstance(inner, Reference))


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


# --- static checks on the parsed template ----------------------------------------------


NodeIndex = dict[type[nodes.Node], list[Any]]


def _index(tree: nodes.Template) -> NodeIndex:
    """Every node of ``tree`` by its type, from one walk (each ``find_all`` walks anew)."""
    index: NodeIndex = {}
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        index.setdefault(type(node), []).append(node)
        stack.extend(node.iter_child_nodes())
    return index


def _of(index: NodeIndex, *kinds: type[nodes.Node]) -> list[Any]:
    return [node for kind in kinds for node in index.get(kind, ())]


def _check_tree(index: NodeIndex, text: str, source: JinjaSource) -> None:
    """Refuse what the sandbox would refuse anyway, at compile time and with a position."""
    for getattr_node in _of(index, nodes.Getattr):
        if getattr_node.attr.startswith("__"):
            _refuse_attribute(getattr_node.attr, text, source)
    for getitem in _of(index, nodes.Getitem):
        key = getitem.arg
        if isinstance(key, nodes.Const) and isinstance(key.value, str):
            if key.value.startswith("__"):
                _refuse_attribute(key.value, text, source)
    for filter_node in _of(index, nodes.Filter):
        if filter_node.name == "attr":
            offset = _find(source, text, r"\|\s*attr\b")
            raise ScanError(
                "unsafe template: the attr filter is not allowed", offset, "template-unsafe"
            )
    for node in _of(index, nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport):
        tag = type(node).__name__.lower().replace("fromimport", "from")
        offset = _find(source, text, rf"\b{tag}\b")
        raise ScanError(
            f"template syntax error: {{% {tag} %}} is not supported", offset, "template-syntax"
        )
    _check_names(index, text, source)


_SOFT_HELPER = "_ref_or_undefined"


def _soften(index: NodeIndex) -> None:
    """Let ``$x | default(...)`` and ``$x is defined`` see an unset value as Jinja's
    undefined instead of failing: only there may a reference be unset."""
    for node in _of(index, nodes.Filter, nodes.Test):
        names = ("default", "d") if isinstance(node, nodes.Filter) else ("defined", "undefined")
        call = node.node
        if node.name in names and isinstance(call, nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == HELPER:
                call.node = nodes.Name(_SOFT_HELPER, "load", lineno=call.node.lineno)


_LOOP_ITEMS = "_loop_items"


def _meter_loops(index: NodeIndex) -> None:
    """Make every ``{% for %}`` iterate through :func:`limits.metered_items`, so that
    nested loops spend the render's budget however their items are made."""
    for loop in _of(index, nodes.For):
        line = loop.lineno
        name = nodes.Name(_LOOP_ITEMS, "load", lineno=line)
        loop.iter = nodes.Call(name, [loop.iter], [], None, None, lineno=line)


def _refuse_attribute(name: str, text: str, source: JinjaSource) -> None:
    offset = _find(source, text, re.escape(name))
    message = f"unsafe template: access to attribute '{name}' is not allowed"
    raise ScanError(message, offset, "template-unsafe")


def _check_names(index: NodeIndex, text: str, source: JinjaSource) -> None:
    # a bare name is almost always a reference written without its `$`
    unknown = _undeclared(index) - set(_environment().globals)
    if not unknown:
        return
    where = {name: _find(source, text, rf"(?<![\w.$]){re.escape(name)}\b") for name in unknown}
    name = min(unknown, key=lambda n: (where[n], n))
    message = (
        f"unknown name '{name}' in template; references start with $: "
        "$call.<name>, $flow.key.<name>, $user.key.<name>, $sys.<name>"
    )
    raise ScanError(message, where[name], "unknown-scope")


def _check_callables(index: NodeIndex, env: Environment) -> None:
    """Unknown filters and tests, which Jinja itself finds only when generating code."""
    for node in _of(index, nodes.Filter, nodes.Test):
        known, kind = (
            (env.filters, "filter") if isinstance(node, nodes.Filter) else (env.tests, "test")
        )
        if node.name not in known:
            raise TemplateSyntaxError(f"No {kind} named {node.name!r}.", node.lineno)


_IMPLICIT_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "self"})


def _undeclared(index: NodeIndex) -> set[str]:
    """Names read but never set in the template (cheaper than ``jinja2.meta``, which
    generates the template's code; scoping is ignored: a name set anywhere counts)."""
    loaded: set[str] = set()
    stored: set[str] = set()
    for name in _of(index, nodes.Name):
        (loaded if name.ctx == "load" else stored).add(name.name)
    for macro in _of(index, nodes.Macro):
        stored.add(macro.name)
        stored.update(arg.name for arg in macro.args)
    for block in _of(index, nodes.CallBlock):
        stored.update(arg.name for arg in block.args)
    return loaded - stored - _IMPLICIT_NAMES


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


class _NotData(Exception):
    """A template produced something that is not JSON-like data."""


def _as_data(value: Any) -> Any:
    """A typed result as plain data: containers copied with tuples as lists, Markup as
    str; an undefined value raises its reason, anything else raises _NotData."""
    if isinstance(value, dict | list | tuple):
        limits.require_measure(value, "the result")
    if isinstance(value, str | int | float | type(None)):
        return str.__str__(value) if isinstance(value, Markup) else value
    if isinstance(value, dict):
        return {key: _as_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_data(item) for item in value]
    _not_data(value)


def _finalize(value: Any) -> str:
    # containers go to JSON, where an undefined member still raises (through str())
    if isinstance(value, dict | list | tuple):
        limits.require_measure(value, "a rendered value")
    if isinstance(value, str | int | float | type(None) | dict | list | tuple):
        return format_text(value)
    _not_data(value)


def _not_data(value: Any) -> NoReturn:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises its reason (undefined, or unsafe)
    raise _NotData(f"the template gives a {type(value).__name__} object, not data")


def _output_too_large() -> LimitExceeded:
    return LimitExceeded("rendered text is over 64 KiB")


def _limit_output(text: str) -> str:
    # a character is at least one UTF-8 byte: short texts need no encoding
    if len(text) > MAX_OUTPUT // 4:
        if len(text) > MAX_OUTPUT or len(text.encode("utf-8", "surrogatepass")) > MAX_OUTPUT:
            raise _output_too_large()
    return text


def _collect(chunks: Iterator[str]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:  # stop early: a loop may be producing without end
            raise _output_too_large()
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
    if isinstance(exc, LimitExceeded):
        return TemplateError(str(exc), where, exc.rule)
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


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    words = _int(n) * (abs(_int(min)) + abs(_int(max)))
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


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, bounded (see :mod:`flowrunner.limits`): every call,
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
        if obj is _reference or obj is _reference_or_undefined or obj is limits.metered_items:
            return context.call(obj, *args, **kwargs)  # our own reads: nothing is built
        limits.tick()
        receiver = getattr(obj, "__self__", None)
        if isinstance(receiver, _STRING_TYPES) and isinstance(obj, types.BuiltinMethodType):
            what = f"the result of {obj.__name__}()"
            if obj.__name__ == "join" and args:
                items = list(limits.metered_items(args[0]))
                limits.require(limits.join_estimate(receiver, items), what)
                args = (items, *args[1:])
            limits.require(limits.method_estimate(receiver, obj.__name__, args, kwargs), what)
            return limits.built(super().call(context, obj, *args, **kwargs), what)
        if isinstance(receiver, int) and getattr(obj, "__name__", "") == "to_bytes":
            limits.require(_int(args[0] if args else kwargs.get("length"), 1), "to_bytes()")
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


# --- filters: inputs and amplification bounded ----------------------------------------

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
    width = len(width) if isinstance(width, str) else _int(width)
    text = value if isinstance(value, str) else ""
    return limits.measure(value, MAX_VALUE) + (text.count("\n") + 1) * max(width, 0)


def _wordwrap_estimate(value: Any, params: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    # a break inside a word adds the wrap string; a break at whitespace replaces it
    text = value if isinstance(value, str) else str(value)
    width = max(_int(_param(params, kwargs, 0, "width", 79)), 1)
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
    "center": lambda v, p, k: _int(_param(p, k, 0, "width", 80)),
    "indent": _indent_estimate,
    "wordwrap": _wordwrap_estimate,
    "replace": _replace_estimate,
    "format": _format_estimate,
    "batch": lambda v, p, k: (
        _int(_param(p, k, 0, "linecount", 0))
        if _param(p, k, 1, "fill_with", None) is not None
        else 0
    ),
    "slice": lambda v, p, k: _int(_param(p, k, 0, "slices", 0)),
    "tojson": lambda v, p, k: limits.measure(v, MAX_VALUE, _int(_param(p, k, 0, "indent", 0))),
    "pprint": lambda v, p, k: limits.measure(v, MAX_VALUE, 1),
}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
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


def _join_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    """The join filter, with its items counted before anything is joined."""

    @functools.wraps(original)
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(limits.metered_items(value))
        limits.require(limits.join_estimate(d, items), "the result of the join filter")
        return original(eval_ctx, items, d, attribute)

    return join


def _sum_filter(original: Callable[..., Any]) -> Callable[..., Any]:
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
