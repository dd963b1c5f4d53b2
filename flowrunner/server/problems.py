"""Errors of the API as RFC 9457 problem details (``application/problem+json``).

Each problem has a ``type`` URI naming its kind, a ``title`` fixed for that kind, the
HTTP ``status``, a ``detail`` for this occurrence and, for a body that breaks the
request schema, ``errors``: one ``{"pointer", "detail"}`` per problem, the pointer a
JSON Pointer (RFC 6901) into the body. Details never quote a secret.
"""

from __future__ import annotations

from typing import Any

from flowrunner.jsoncodec import dumps

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://flowrunner.dev/problems/"

TITLES: dict[str, tuple[int, str]] = {
    "bad-json": (400, "The body is not valid JSON"),
    "bad-header": (400, "A header has an invalid value"),
    "unauthorized": (401, "Missing or invalid bearer token"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "idempotency-in-flight": (409, "A request with this Idempotency-Key is still being recorded"),
    "too-large": (413, "The body is too large"),
    "unsupported-media-type": (415, "The body must be JSON"),
    "invalid-body": (422, "The body does not match the request schema"),
    "idempotency-mismatch": (422, "This Idempotency-Key was used with another body"),
    "backlog-full": (429, "Too many executions are waiting"),
    "internal": (500, "Internal error"),
    "shutting-down": (503, "The server is shutting down"),
    "unavailable": (503, "The state store is unavailable"),
}


class Problem(Exception):
    """A problem to answer with: raise it from a handler, or build its body."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return TITLES[self.kind][0]

    def body(self, instance: str | None = None) -> bytes:
        """The problem+json document; ``instance`` is the request path."""
        status, title = TITLES[self.kind]
        doc: dict[str, Any] = {
            "type": TYPE_BASE + self.kind,
            "title": title,
            "status": status,
            "detail": self.detail,
        }
        if instance is not None:
            doc["instance"] = instance
        if self.errors:
            doc["errors"] = self.errors
        return dumps(doc)


def pointer(path: tuple[str | int, ...] | list[str | int]) -> str:
    """The JSON Pointer of ``path`` (``~`` and ``/`` escaped); the root is ``""``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)
