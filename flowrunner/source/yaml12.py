"""YAML 1.2 booleans: only ``true`` and ``false`` (any case form of the core schema).

Editors (yaml-language-server) and JSON Schema validators read YAML 1.2, where ``yes``,
``no``, ``on``, ``off``, ``y`` and ``n`` are plain strings; YAML 1.1 tools (PyYAML's
default resolver among them) read the same words as booleans. The loader reads them as
strings and warns where one stands unquoted, so that every tool agrees once it is quoted.
"""

from __future__ import annotations

from flowrunner.errors import Diagnostic, Mark

BOOLEANS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False}
BOOLEANS["FALSE"] = False
TRUTHY_11 = frozenset("y Y yes Yes YES n N no No NO on On ON off Off OFF".split())
# as keys, y and n are common short names (coordinates) that few tools read as booleans
TRUTHY_KEYS = TRUTHY_11 - {"y", "Y", "n", "N"}


def truthy_warning(file: str, mark: Mark, word: str) -> Diagnostic:
    """The ``yaml-truthy`` warning for an unquoted YAML 1.1 boolean word at ``mark``."""
    return Diagnostic(
        file=file,
        line=mark.line,
        column=mark.column,
        rule="yaml-truthy",
        message=(
            f"'{word}' is the string \"{word}\" here (only true/false are booleans), "
            f'but YAML 1.1 tools read it as a boolean; quote it ("{word}")'
        ),
        severity="warning",
    )
