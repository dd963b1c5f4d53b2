"""Problems: collects the diagnostics of one source document, at the positions of its values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowrunner.document import Document
from flowrunner.document import Path as DocPath
from flowrunner.errors import Diagnostic, Mark, TemplateError, Where
from flowrunner.templating import Compiled, compile_value


@dataclass(slots=True)
class Problems:
    """Collects diagnostics for one source document."""

    doc: Document
    items: list[Diagnostic] = field(default_factory=list)

    def add(
        self, path: DocPath, rule: str, message: str, *, key: bool = False, warning: bool = False
    ) -> None:
        mark = self.doc.key_mark(path) if key else self.doc.mark(path)
        self.at(mark, rule, message, warning=warning)

    def at(self, mark: Mark, rule: str, message: str, *, warning: bool = False) -> None:
        self.items.append(
            Diagnostic(
                file=self.doc.file,
                line=mark.line,
                column=mark.column,
                rule=rule,
                message=message,
                severity="warning" if warning else "error",
            )
        )

    def template(self, exc: TemplateError, prefix: str = "") -> None:
        mark = exc.where.mark or Mark(1, 1)
        self.at(mark, exc.rule, prefix + exc.bare_message)

    def compile(
        self, value: Any, path: DocPath, step: str | None, fld: str, owner: str = ""
    ) -> Compiled | None:
        """``value`` compiled; a problem is collected, prefixed by its step or ``owner``."""
        where = Where(file=self.doc.file, mark=self.doc.mark(path), step=step, field=fld)
        try:
            return compile_value(value, where)
        except TemplateError as exc:
            self.template(exc, f"step '{step}': " if step else owner)
            return None
