"""YAML data with positions: the type the loader returns, and the model and compiler read.

A :data:`Path` names one value inside the data (mapping keys and list indexes from the
root); :class:`Document` keeps the 1-based position of every value and key by path.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from flowrunner.errors import Diagnostic, Mark
from flowrunner.frozen import frozen

Path = tuple[str | int, ...]


@frozen
class Document:
    """One loaded file: its data, the position of every value and key, and problems."""

    file: str
    data: Any
    marks: dict[Path, Mark] = field(default_factory=dict)
    key_marks: dict[Path, Mark] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)

    def mark(self, path: Path) -> Mark:
        """The mark of ``path``, else of its nearest ancestor that has one, else 1:1."""
        while (found := self.marks.get(path)) is None:
            if not path:
                return Mark(1, 1)
            path = path[:-1]
        return found

    def key_mark(self, path: Path) -> Mark:
        """The mark of the mapping key whose value is at ``path``, else ``mark(path)``."""
        return self.key_marks.get(path) or self.mark(path)
