"""Secrets: ``{secret: NAME}`` read from the environment or a ``--secrets-file``.

Values are looked up only when a request is built, and never appear in messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from flowrunner.errors import SecretError, UsageError
from flowrunner.model import SecretRef

MASK = "***"


def read_secrets_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read secrets file ({type(exc).__name__})") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        if not sep or not name.strip():
            # the line may hold a secret: name its number only
            raise UsageError(f"{path}:{number}: expected NAME=value")
        values[name.strip()] = value
    return values


class Secrets:
    """Resolves secret references; ``masked=True`` returns a mask instead (dry runs)."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        *,
        masked: bool = False,
    ) -> None:
        self._env = os.environ if env is None else env
        self._extra = dict(extra or {})
        self.masked = masked

    def resolve(self, ref: SecretRef) -> str:
        """The secret's value; raises :class:`SecretError` naming the secret when unset.

        Masked (dry runs), every secret reads as the mask, set or not.
        """
        if self.masked:
            return MASK
        value = self._extra.get(ref.name)
        if value is None:
            value = self._env.get(ref.name)
        if value is None:
            raise SecretError(
                f"secret {ref.name} is not set (set the environment variable {ref.name} "
                "or pass --secrets-file)"
            )
        return value

    def values(self, refs: list[SecretRef]) -> list[str]:
        """The values of ``refs`` that are set (for scrubbing outputs)."""
        out = []
        for ref in refs:
            value = self._extra.get(ref.name, self._env.get(ref.name))
            if value:
                out.append(value)
        return out
