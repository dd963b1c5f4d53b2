"""The Jinja path of compiling a string: parse once, check the tree statically (what the
sandbox would refuse, bare names, unknown filters), soften references under ``default``,
meter loops and fold constants. The only module of the compile path that imports jinja2,
reached only for a string with ``{{ }}`` or ``{% %}``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

from jinja2 import nodes
from jinja2.exceptions import TemplateRuntimeError, TemplateSyntaxError
from jinja2.optimizer import optimize

from flowrunner.errors import Where
from flowrunner.templating.environment import sandbox_environment, single_output
from flowrunner.templating.references import Construct, Piece, Reference, ScanError, to_jinja
from flowrunner.templating.render import render_error
from flowrunner.templating.static import (
    check_callables,
    check_tree,
    folds,
    index_tree,
    meter_loops,
    soften,
)
from flowrunner.templating.values import Compiled, Expression, JinjaText


def compile_jinja(
    text: str, pieces: tuple[Piece, ...], where: Where, *, expression: bool
) -> Compiled:
    """The Jinja shape of ``text`` (scanned into ``pieces``): parsed, checked statically,
    constant parts folded. Raises ScanError at the offset of the problem in ``text``."""
    source = to_jinja(pieces)
    references = tuple(_all_references(pieces))
    env = sandbox_environment()
    try:
        tree = env.parse(source.text)
        index = index_tree(tree)
        check_tree(index, text, source)
        check_callables(index, env)
        soften(index)
        meter_loops(index)
        # Constant folding is where compiling can fail the way rendering would
        # (`''.x ~ 'a'`): do it now, where there is something to fold; generating
        # Python waits for the first render, so that checking a thousand flows costs a
        # parse per template, not a compile.
        if folds(index):
            tree = cast(nodes.Template, optimize(tree, env))
        if expression and single_output(tree) is not None:
            return Expression(references, where, tree)
        return JinjaText(references, where, tree)
    except TemplateSyntaxError as exc:
        from flowrunner.templating.syntax import syntax_message, syntax_offset  # rarely needed

        offset = syntax_offset(exc, source, text)
        raise ScanError(syntax_message(exc), offset, "template-syntax") from exc
    except TemplateRuntimeError as exc:
        # Jinja folds constant parts while compiling, and folding `''.x ~ 'a'` or
        # `'a' if ''.x else 'b'` raises what rendering would: report that, here
        first = source.constructs[0][0].start if source.constructs else 0
        error = render_error(exc, Where())
        raise ScanError(error.bare_message, first, error.rule) from exc
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
