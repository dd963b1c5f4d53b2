"""Coverage of flows by test cases: steps run, and branches taken.

Every step is one item to reach (it ran: it was not skipped). Branches: a webhook step
has a ``success`` and a ``failure`` branch, a step with ``when`` a ``when true`` and a
``when false`` branch. The figure of a run is items reached over items, steps and
branches together, as coverage tools count lines and branches together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flowrunner.execution.record import ExecutionRecord
from flowrunner.plan.types import Plan
from flowrunner.testing.cases import CaseResult
from flowrunner.testing.suite import Suite


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowCoverage:
    """What the cases reached of one flow; ``missed`` lists what none reached."""

    flow: str
    file: str
    steps: int
    steps_run: int
    branches: int
    branches_taken: int
    missed: tuple[str, ...]

    @property
    def percent(self) -> float:
        total = self.steps + self.branches
        return 100.0 if total == 0 else 100.0 * (self.steps_run + self.branches_taken) / total

    def as_dict(self) -> dict[str, object]:
        return {
            "flow": self.flow,
            "file": self.file,
            "steps": self.steps,
            "steps_run": self.steps_run,
            "branches": self.branches,
            "branches_taken": self.branches_taken,
            "percent": round(self.percent, 1),
            "missed": list(self.missed),
        }


def branches(plan: Plan) -> list[str]:
    """Every branch of the plan, as ``step-id: success|failure|when true|when false``."""
    out = []
    for compiled in plan.steps:
        step = compiled.step
        if step.when is not None:
            out += [f"{step.id}: when true", f"{step.id}: when false"]
        if compiled.webhook is not None:
            out += [f"{step.id}: success", f"{step.id}: failure"]
    return out


def reached(plan: Plan, records: Iterable[ExecutionRecord]) -> tuple[set[str], set[str]]:
    """The step ids run and the branches taken by ``records``."""
    conditional = {s.step.id for s in plan.steps if s.step.when is not None}
    steps: set[str] = set()
    taken: set[str] = set()
    for record in records:
        for trace in record.steps:
            if trace.outcome == "skipped":
                taken.add(f"{trace.id}: when false")
                continue
            steps.add(trace.id)
            if trace.id in conditional:
                taken.add(f"{trace.id}: when true")
            if trace.kind == "webhook":
                taken.add(f"{trace.id}: {'success' if trace.outcome == 'ok' else 'failure'}")
    return steps, taken


def flow_coverage(plan: Plan, records: Iterable[ExecutionRecord]) -> FlowCoverage:
    """The coverage of ``plan`` by ``records`` (the executions of its cases)."""
    ids = [s.step.id for s in plan.steps]
    all_branches = branches(plan)
    run, taken = reached(plan, records)
    missed = [f"step {i}" for i in ids if i not in run]
    missed += [f"branch {b}" for b in all_branches if b not in taken]
    return FlowCoverage(
        flow=plan.flow.name,
        file=plan.flow.file,
        steps=len(ids),
        steps_run=sum(1 for i in ids if i in run),
        branches=len(all_branches),
        branches_taken=sum(1 for b in all_branches if b in taken),
        missed=tuple(missed),
    )


def coverage_of(
    suites: list[Suite], results: list[CaseResult], others: Iterable[Plan] = ()
) -> list[FlowCoverage]:
    """The coverage of every flow under test by the executions of ``results``, and of
    ``others`` (flows no test file names: nothing reached), sorted by flow name."""
    records: dict[str, list[ExecutionRecord]] = {}
    for result in results:
        if result.record is not None:
            records.setdefault(result.flow, []).append(result.record)
    plans = {plan.flow.name: plan for plan in others}
    plans.update({suite.plan.flow.name: suite.plan for suite in suites})
    return [flow_coverage(plans[name], records.get(name, [])) for name in sorted(plans)]


def total_percent(flows: Iterable[FlowCoverage]) -> float:
    """Steps and branches reached over all of them, across ``flows``, in percent."""
    items = reached_items = 0
    for cov in flows:
        items += cov.steps + cov.branches
        reached_items += cov.steps_run + cov.branches_taken
    return 100.0 if items == 0 else 100.0 * reached_items / items


def coverage_text(flows: list[FlowCoverage]) -> str:
    """A table: per flow, steps run / steps, branches taken / branches, and what was missed."""
    lines = ["coverage:"]
    for cov in flows:
        lines.append(
            f"  {cov.flow:<24} steps {cov.steps_run}/{cov.steps}  "
            f"branches {cov.branches_taken}/{cov.branches}  {cov.percent:.1f}%"
        )
        lines += [f"      not reached: {item}" for item in cov.missed]
    lines.append(f"  total {total_percent(flows):.1f}%")
    return "\n".join(lines)
