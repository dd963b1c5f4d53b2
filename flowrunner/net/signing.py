"""Standard Webhooks signatures: HMAC-SHA256 over ``id.timestamp.body``, ``v1,<base64>``."""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret``: base64 after ``whsec_``, else the UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except ValueError:
            pass  # not valid base64: fall back to the literal bytes, like other senders
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str | None, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and, with a secret, ``webhook-signature``."""
    out = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secret is not None:
        out["webhook-signature"] = sign(secret, msg_id, timestamp, body)
    return out
