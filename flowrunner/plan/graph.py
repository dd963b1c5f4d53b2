"""Diagrams of a flow: Mermaid (pastes into Markdown) and Graphviz DOT.

A node per step (its id and kind), an edge to the step that runs next (labelled
``next`` when the step jumps), a dashed ``failure`` edge for ``on_failure``, a
``when false`` edge from a conditional step to the step that runs when it is skipped,
and one ``end`` node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from flowrunner.plan.types import END, CompiledStep, Plan


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """From step index ``source`` to ``target`` (an index or END)."""

    source: int
    target: int
    label: str = ""
    dashed: bool = False


def kind(step: CompiledStep) -> str:
    """What a node says a step does: ``assign``, or ``webhook crm.createLead``."""
    if step.webhook is not None and step.method is not None:
        return f"webhook {step.webhook.webhook.name}.{step.method.name}"
    return "assign"


def edges(plan: Plan) -> list[Edge]:
    """Every edge of the diagram, in step order."""
    out = []
    last = len(plan.steps) - 1
    for step in plan.steps:
        jump = step.step.next is not None
        out.append(Edge(source=step.index, target=step.next_index, label="next" if jump else ""))
        if step.step.when is not None:
            following = step.index + 1 if step.index < last else END
            out.append(Edge(source=step.index, target=following, label="when false"))
        if step.failure_index is not None:
            out.append(
                Edge(source=step.index, target=step.failure_index, label="failure", dashed=True)
            )
    return out


def _node(index: int) -> str:
    return "end_" if index == END else f"s{index}"


def mermaid(plan: Plan) -> str:
    """The flow as a Mermaid flowchart."""
    lines = ["flowchart TD"]
    for step in plan.steps:
        label = f"{step.step.id}<br/><i>{kind(step)}</i>".replace('"', "#quot;")
        lines.append(f'    {_node(step.index)}["{label}"]')
    lines.append(f"    {_node(END)}(((end)))")
    for edge in edges(plan):
        source, target = _node(edge.source), _node(edge.target)
        if edge.dashed:
            lines.append(f"    {source} -. {edge.label} .-> {target}")
        elif edge.label:
            lines.append(f"    {source} -- {edge.label} --> {target}")
        else:
            lines.append(f"    {source} --> {target}")
    return "\n".join(lines)


def _quote(text: str) -> str:
    # a JSON string is a valid DOT string: quotes and backslashes escaped
    return json.dumps(text, ensure_ascii=False)


def dot(plan: Plan) -> str:
    """The flow as a Graphviz digraph (``dot -Tsvg`` renders it)."""
    lines = [f"digraph {_quote(plan.flow.name)} {{", "    node [shape=box, style=rounded];"]
    for step in plan.steps:
        label = f"{step.step.id}\n{kind(step)}"
        lines.append(f"    {_node(step.index)} [label={_quote(label)}];")
    lines.append(f'    {_node(END)} [label="end", shape=doublecircle];')
    for edge in edges(plan):
        attrs = []
        if edge.label:
            attrs.append(f"label={_quote(edge.label)}")
        if edge.dashed:
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {_node(edge.source)} -> {_node(edge.target)}{suffix};")
    lines.append("}")
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[Plan], str]] = {"mermaid": mermaid, "dot": dot}
