"""Static checks on a parsed template, at load time and with a position: what the
sandbox would refuse, bare names, unknown filters and tests; and the rewrites that
soften references under ``default``/``defined`` and meter ``{% for %}`` loops."""

from __future__ import annotations

import re
from typing import Any

from jinja2 import nodes
from jinja2.environment import Environment
from jinja2.exceptions import TemplateSyntaxError

from flowrunner.templating import limits
from flowrunner.templating.environment import sandbox_environment
from flowrunner.templating.references import HELPER, JinjaSource, ScanError
from flowrunner.templating.sandbox import LOOP_ITEMS, SOFT_HELPER

NodeIndex = dict[type[nodes.Node], list[Any]]


def index_tree(tree: nodes.Template) -> NodeIndex:
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


def check_tree(index: NodeIndex, text: str, source: JinjaSource) -> None:
    """Refuse what the sandbox would refuse anyway, at compile time and with a position."""
    for getattr_node in _of(index, nodes.Getattr):
        if getattr_node.attr.startswith("__"):
            _refuse_attribute(getattr_node.attr, text, source)
    for getitem in _of(index, nodes.Getitem):
        key = getitem.arg
        if isinstance(key, nodes.Const) and isinstance(key.value, str):
            if key.value.startswith("__"):
                _refuse_attribute(key.value, text, source)
    for call in _of(index, nodes.Call):
        _check_codec(call, text, source)
    for filter_node in _of(index, nodes.Filter):
        if filter_node.name == "attr":
            offset = find_in_source(source, text, r"\|\s*attr\b")
            raise ScanError(
                "unsafe template: the attr filter is not allowed", offset, "template-unsafe"
            )
    for node in _of(index, nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport):
        tag = type(node).__name__.lower().replace("fromimport", "from")
        offset = find_in_source(source, text, rf"\b{tag}\b")
        raise ScanError(
            f"template syntax error: {{% {tag} %}} is not supported", offset, "template-syntax"
        )
    _check_names(index, text, source)


def soften(index: NodeIndex) -> None:
    """Let ``$x | default(...)`` and ``$x is defined`` see an unset value as Jinja's
    undefined instead of failing: only there may a reference be unset."""
    for node in _of(index, nodes.Filter, nodes.Test):
        names = ("default", "d") if isinstance(node, nodes.Filter) else ("defined", "undefined")
        call = node.node
        if node.name in names and isinstance(call, nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == HELPER:
                call.node = nodes.Name(SOFT_HELPER, "load", lineno=call.node.lineno)


def meter_loops(index: NodeIndex) -> None:
    """Make every ``{% for %}`` iterate through :func:`limits.metered_items`, so that
    nested loops spend the render's budget however their items are made."""
    for loop in _of(index, nodes.For):
        line = loop.lineno
        name = nodes.Name(LOOP_ITEMS, "load", lineno=line)
        loop.iter = nodes.Call(name, [loop.iter], [], None, None, lineno=line)


def folds(index: NodeIndex) -> bool:
    """Whether ``jinja2.optimizer.optimize`` could change the tree indexed in ``index``:
    False only when every expression in it other than a literal constant is sure to
    raise ``Impossible`` when asked for its constant value (it reads a variable, calls
    something), so that the optimizer would give back the same tree. Most templates
    read references and compute with them; they skip the optimizer's walk, and its
    exception per node."""
    if nodes.TemplateData in index:  # the optimizer turns template data into constants
        return True
    known: dict[int, bool] = {}
    for kind, found in index.items():
        if issubclass(kind, nodes.Expr) and kind is not nodes.Const:
            if not all(_dynamic(node, known) for node in found):
                return True
    return False


# expressions that are never constant (their `as_const` raises Impossible), whatever
# they hold; a reference is a Call of the reference helper
_NEVER_CONSTANT = (
    nodes.Name,
    nodes.Call,
    nodes.NSRef,
    nodes.ContextReference,
    nodes.DerivedContextReference,
    nodes.EnvironmentAttribute,
    nodes.ExtensionAttribute,
    nodes.ImportedName,
    nodes.InternalName,
)


def _dynamic(node: Any, known: dict[int, bool]) -> bool:
    """Whether the expression ``node`` is sure to have no constant value (``known``:
    the answers so far, by node id)."""
    key = id(node)
    if key not in known:
        known[key] = _operands_dynamic(node, known)
    return known[key]


def _operands_dynamic(node: Any, known: dict[int, bool]) -> bool:
    def dyn(*operands: Any) -> bool:
        return any(_dynamic(operand, known) for operand in operands if operand is not None)

    if isinstance(node, nodes.Const):
        return False
    if isinstance(node, _NEVER_CONSTANT):
        return True
    if isinstance(node, (nodes.And, nodes.Or)):  # `false and x` is false: left decides
        return dyn(node.left)
    if isinstance(node, nodes.BinExpr):
        return dyn(node.left, node.right)
    if isinstance(node, nodes.UnaryExpr):
        return dyn(node.node)
    if isinstance(node, (nodes.MarkSafe, nodes.MarkSafeIfAutoescape)):
        return dyn(node.expr)
    if isinstance(node, nodes.CondExpr):  # the test picks the branch
        return dyn(node.test)
    if isinstance(node, nodes.Compare):  # `1 > 2 < x` is false: the first pair decides
        return dyn(node.expr, node.ops[0].expr)
    if isinstance(node, nodes.Getattr):
        return node.ctx != "load" or dyn(node.node)
    if isinstance(node, nodes.Getitem):
        return node.ctx != "load" or dyn(node.node, node.arg)
    if isinstance(node, (nodes.Filter, nodes.Test)):  # no node: a filter block
        keywords = [keyword.value for keyword in node.kwargs]
        extra = (node.dyn_args, node.dyn_kwargs)
        return node.node is None or dyn(node.node, *node.args, *keywords, *extra)
    if isinstance(node, (nodes.Tuple, nodes.List)):
        return dyn(*node.items)
    if isinstance(node, nodes.Dict):
        return dyn(*(part for pair in node.items for part in (pair.key, pair.value)))
    if isinstance(node, nodes.Concat):
        return dyn(*node.nodes)
    if isinstance(node, nodes.Slice):
        return dyn(node.start, node.stop, node.step)
    return False  # an expression of unknown rules: let the optimizer see it


def _check_codec(call: nodes.Call, text: str, source: JinjaSource) -> None:
    """Refuse ``.encode(codec)``/``.decode(codec)`` with a constant codec that the sandbox
    would refuse when rendering (see :func:`limits.check_codec`)."""
    method = call.node
    if not isinstance(method, nodes.Getattr) or method.attr not in ("encode", "decode"):
        return
    named = [kw.value for kw in call.kwargs if kw.key == "encoding"]
    codec = call.args[0] if call.args else (named[0] if named else None)
    if not isinstance(codec, nodes.Const) or limits.codec_allowed(codec.value):
        return
    shown = codec.value if isinstance(codec.value, str) and len(codec.value) <= 40 else "?"
    offset = find_in_source(source, text, rf"\.\s*{method.attr}\b")
    raise ScanError(limits.codec_refusal(method.attr, shown), offset, "template-unsafe")


def _refuse_attribute(name: str, text: str, source: JinjaSource) -> None:
    offset = find_in_source(source, text, re.escape(name))
    message = f"unsafe template: access to attribute '{name}' is not allowed"
    raise ScanError(message, offset, "template-unsafe")


def _check_names(index: NodeIndex, text: str, source: JinjaSource) -> None:
    # a bare name is almost always a reference written without its `$`
    unknown = _undeclared(index) - set(sandbox_environment().globals)
    if not unknown:
        return
    where = {
        name: find_in_source(source, text, rf"(?<![\w.$]){re.escape(name)}\b") for name in unknown
    }
    name = min(unknown, key=lambda n: (where[n], n))
    message = (
        f"unknown name '{name}' in template; references start with $: "
        "$call.<name>, $flow.key.<name>, $user.key.<name>, $sys.<name>"
    )
    raise ScanError(message, where[name], "unknown-scope")


def check_callables(index: NodeIndex, env: Environment) -> None:
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


def find_in_source(source: JinjaSource, text: str, pattern: str) -> int:
    """The offset of the first match of ``pattern`` inside a construct (best effort)."""
    regex = re.compile(pattern)
    for construct, _ in source.constructs:
        match = regex.search(text, construct.start, construct.end)
        if match:
            return match.start()
    return source.constructs[0][0].start if source.constructs else 0
