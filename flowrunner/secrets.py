"""Secrets: ``{secret: NAME}`` read from the environment or a ``--secrets-file``.

Values are looked up only when a request is built, and never appear in messages.
Every value resolved is also remembered for the life of the process, so that
:func:`scrub` can mask it (and the forms it travels in: base64 as in a ``Basic``
``Authorization`` header, JSON-escaped, percent-encoded).

Scrubbing happens in two places. Where data enters: a webhook's answer is the only
outside input that can carry a secret back (a receiver that echoes the request), and
:func:`scrub_value` cleans it before it becomes a flow key, so every record, stored
row, events line and pushed payload built from it is clean, also when read back later
by a process that never knew the secret. And where text leaves: the command line
scrubs all it prints (:func:`flowrunner.cli.common.guarded`), as a second line.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flowrunner.errors import SecretError, UsageError
from flowrunner.source.model import SecretRef

MASK = "***"
MIN_SCRUBBED = 4  # shorter values are not masked: they would mask ordinary text
_MIN_BASE64 = 8  # characters of a base64 fragment that are trusted to be a secret's

_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-")


class Scrubber:
    """A set of secret values, and :meth:`scrub` to mask them in text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._plain: re.Pattern[str] | None = None  # the values and their escaped forms
        self._cores: re.Pattern[str] | None = None  # fragments of their base64 forms

    def remember(self, value: str) -> None:
        """Mask ``value`` from now on (values under MIN_SCRUBBED characters are not)."""
        if len(value) < MIN_SCRUBBED or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            forms = {f for v in self._values for f in _forms(v) if len(f) >= MIN_SCRUBBED}
            cores = {core for v in self._values for core in _base64_cores(v)}
            self._plain = _alternatives(forms)
            self._cores = _alternatives(cores) if cores else None

    def scrub(self, text: str) -> str:
        """``text`` with every value, and its encoded forms, replaced by the mask.

        Linear in the length of ``text``: literal alternatives only, and the base64
        token around a fragment is found by scanning, not by backtracking."""
        plain, cores = self._plain, self._cores
        if plain is None or not text:
            return text
        text = plain.sub(MASK, text)
        if cores is None:
            return text
        out: list[str] = []
        done = 0
        for match in cores.finditer(text):
            start, end = match.start(), match.end()
            if start < done:
                continue  # inside a token already masked
            while start > done and text[start - 1] in _BASE64:
                start -= 1
            while end < len(text) and text[end] in _BASE64:
                end += 1
            while end < len(text) and text[end] == "=":
                end += 1
            out += (text[done:start], MASK)
            done = end
        out.append(text[done:])
        return "".join(out)

    def scrub_value(self, value: Any) -> Any:
        """``value`` (JSON-shaped data) with every string in it, keys included, scrubbed;
        the value itself when no secret is known."""
        if self._plain is None:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_value(v) for v in value]
        return value


SCRUBBER = Scrubber()  # every value resolved in this process (Secrets.resolve adds them)
remember = SCRUBBER.remember
scrub = SCRUBBER.scrub
scrub_value = SCRUBBER.scrub_value


def _alternatives(texts: set[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True)))


def _forms(value: str) -> Iterator[str]:
    """The value as it may appear in output: as is, JSON-escaped, percent-encoded."""
    yield value
    yield json.dumps(value, ensure_ascii=False)[1:-1]
    yield json.dumps(value)[1:-1]
    yield quote(_bytes(value), safe="")


def _bytes(value: str) -> bytes:
    """The bytes of a value, also of one read from the environment with invalid UTF-8."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _base64_cores(value: str) -> Iterator[str]:
    """Fragments present in any base64 text that encodes ``value`` (at any of the three
    byte alignments, standard and URL-safe alphabets), e.g. ``Basic <user:value>``."""
    raw = _bytes(value)
    for start in range(3):
        whole = raw[start:]
        whole = whole[: len(whole) - len(whole) % 3]
        if len(whole) * 4 // 3 >= _MIN_BASE64:
            core = base64.b64encode(whole).decode()
            yield core
            yield core.replace("+", "-").replace("/", "_")


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
        remember(value)
        return value

    def values(self, refs: list[SecretRef]) -> list[str]:
        """The values of ``refs`` that are set (for scrubbing outputs)."""
        out = []
        for ref in refs:
            value = self._extra.get(ref.name, self._env.get(ref.name))
            if value:
                out.append(value)
        return out
