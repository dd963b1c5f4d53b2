"""Errors and diagnostics: a leaf module that imports nothing else from flowrunner.

The hierarchy::

    FlowrunnerError                 base of everything flowrunner raises on purpose
    ├── UsageError                  bad command-line input                 (exit 2)
    ├── InvalidProject              diagnostics make a project/flow unusable (exit 2 for run)
    ├── LoadError                   one file refused by the YAML loader (carries a Diagnostic)
    ├── TemplateError               a template failed at compile or render time
    │   └── UndefinedReference      a reference to something unset
    ├── SecretError                 a `{secret: NAME}` could not be resolved (names NAME only)
    └── StateError                  the SQLite state store could not be used

A ``Diagnostic`` is one problem found in a file, with a 1-based position, a severity and
a rule id; its ``format()`` is the one-line shape every command prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowrunner.frozen import frozen

Severity = Literal["error", "warning"]


@frozen
class Mark:
    """A 1-based position in a source file; ``style`` is the YAML scalar style, if any.

    ``lines`` is set for a string value written over several source lines: for each of
    them, ``(offset in the value, line, column)`` of its first character, so that a
    position inside the value can be mapped back to the file.
    """

    line: int
    column: int
    style: str | None = None
    lines: tuple[tuple[int, int, int], ...] = field(default=(), compare=False, repr=False)


@frozen(kw_only=True)
class Diagnostic:
    """One problem at one position.

    ``file`` is the path as the user gave it (or ``<stdin>``); ``line`` and ``column``
    are 1-based; ``rule`` is a stable rule id listed in docs/rules.md.
    """

    file: str
    line: int
    column: int
    rule: str
    message: str
    severity: Severity = "error"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.column, self.rule, self.message)

    def format(self) -> str:
        """The one-line text form: ``file:line:col: severity: message [rule]``."""
        return (
            f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message} [{self.rule}]"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "rule": self.rule,
            "message": self.message,
        }


class FlowrunnerError(Exception):
    """Base class of every error flowrunner raises deliberately."""

    exit_code: int = 3


class UsageError(FlowrunnerError):
    """Bad command-line input: a flag value, a missing file, an unknown flow name."""

    exit_code = 2


class InvalidProject(FlowrunnerError):
    """The project or a flow has errors; nothing may run."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        errors = sum(1 for d in diagnostics if d.severity == "error")
        super().__init__(f"{errors} problem(s) found")


class LoadError(FlowrunnerError):
    """A file the defensive YAML loader refused; ``diagnostic`` says where and why."""

    exit_code = 2

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(diagnostic.format())


@frozen(kw_only=True)
class Where:
    """Where a template lives: the step, the field inside it, the file position."""

    file: str = "<unknown>"
    mark: Mark | None = None
    step: str | None = None
    field: str | None = None

    def prefix(self) -> str:
        """``file:line:col: step 'id' field 'f': `` (parts that are unknown are omitted)."""
        parts = []
        if self.mark is not None:
            parts.append(f"{self.file}:{self.mark.line}:{self.mark.column}: ")
        if self.step is not None:
            parts.append(f"step '{self.step}'")
            if self.field is not None:
                parts.append(f" field '{self.field}'")
            parts.append(": ")
        elif self.field is not None:
            parts.append(f"field '{self.field}': ")
        return "".join(parts)


class TemplateError(FlowrunnerError):
    """A template could not be compiled or rendered. The message is user-facing."""

    exit_code = 1

    def __init__(self, message: str, where: Where | None = None, rule: str = "template") -> None:
        self.bare_message = message
        self.where = where or Where()
        self.rule = rule
        super().__init__(self.where.prefix() + message)


class UndefinedReference(TemplateError):
    """A reference to an unset variable, e.g. ``$flow.key.ordr``."""

    def __init__(
        self, reference: str, suggestion: str | None = None, where: Where | None = None
    ) -> None:
        self.reference = reference
        self.suggestion = suggestion
        hint = f" (did you mean {suggestion}?)" if suggestion else ""
        super().__init__(f"undefined variable {reference}{hint}", where, rule="undefined-key")


class SecretError(FlowrunnerError):
    """A secret could not be resolved. The message names the secret, never a value."""

    exit_code = 2


@dataclass(slots=True)
class StepFailure:
    """Data of a step that failed: the step id, an error reason code and a message."""

    step: str
    reason: str
    message: str
    extra: dict[str, object] = field(default_factory=dict)


class StateError(FlowrunnerError):
    """The state store (SQLite) could not be opened or used."""

    exit_code = 3
