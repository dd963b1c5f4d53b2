"""The project as ``serve`` runs it: every flow compiled, checked as ``validate`` does.

A revision is all or nothing: with any error in the project file or any flow, there is
no revision (``serve`` does not start; a reload keeps the previous one).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from flowrunner.errors import Diagnostic, InvalidProject
from flowrunner.plan.types import Plan
from flowrunner.project import FLOWS_DIR, check_flow_doc, flow_files, load_doc, load_project
from flowrunner.source.model import Project
from flowrunner.validate import validate


@dataclass(frozen=True, slots=True, kw_only=True)
class Revision:
    """One loaded state of the project: its model and the plan of every flow by name."""

    project: Project
    plans: dict[str, Plan]

    def webhook_of_step(self, flow: str) -> dict[str, str]:
        """Step id -> webhook name, for the webhook steps of ``flow``."""
        plan = self.plans.get(flow)
        if plan is None:
            return {}
        return {s.step.id: s.webhook.webhook.name for s in plan.steps if s.webhook is not None}


def load_revision(root: Path) -> Revision:
    """Load and check the project at ``root`` and every flow in its ``flows/`` folder.

    Raises :class:`InvalidProject` with every error (warnings are not errors).
    """
    diags = validate([], root, io.BytesIO())
    errors = [d for d in diags if d.severity == "error"]
    if errors:
        raise InvalidProject(errors)
    cproject, _ = load_project(root)
    plans: dict[str, Plan] = {}
    problems: list[Diagnostic] = []
    for path in flow_files(root / FLOWS_DIR):
        doc, more = load_doc(path)
        problems += [d for d in more if d.severity == "error"]
        if doc is None:
            continue
        plan, more = check_flow_doc(doc, cproject)
        problems += [d for d in more if d.severity == "error"]
        if plan is not None:
            plans[plan.flow.name] = plan
    if problems or cproject is None:
        raise InvalidProject(sorted(problems, key=Diagnostic.sort_key))
    return Revision(project=cproject.project, plans=plans)
