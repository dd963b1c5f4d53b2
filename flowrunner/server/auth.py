"""Bearer tokens of the API: resolved once from secrets, compared in constant time."""

from __future__ import annotations

import hmac

from flowrunner.errors import UsageError
from flowrunner.secrets import Secrets
from flowrunner.source.model import ServePolicy

CHALLENGE = 'Bearer realm="flowrunner"'


class Tokens:
    """The accepted tokens. Every token is compared, whatever matched, so the time an
    answer takes does not tell which token (or how much of one) was right."""

    def __init__(self, values: list[bytes]) -> None:
        self._values = values

    @classmethod
    def resolve(cls, policy: ServePolicy, secrets: Secrets) -> Tokens:
        """The tokens of ``serve.tokens``.

        Raises :class:`UsageError` when none is configured, and
        :class:`~flowrunner.errors.SecretError` naming a token's secret that is unset.
        """
        if not policy.tokens:
            raise UsageError(
                "serve needs at least one API token: add serve.tokens: [{secret: NAME}] "
                "to flowrunner.yaml and set NAME in the environment"
            )
        values = []
        for ref in policy.tokens:
            value = secrets.resolve(ref)
            if not value:
                raise UsageError(f"secret {ref.name} (an API token) is empty")
            values.append(value.encode())
        return cls(values)

    def allows(self, authorization: str | None) -> bool:
        """True when ``authorization`` is ``Bearer <one of the tokens>``."""
        if authorization is None:
            return False
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        presented = given.strip().encode("utf-8", "surrogateescape")
        ok = False
        for value in self._values:
            ok |= hmac.compare_digest(presented, value)
        return ok
