"""``flowrunner webhooks list|check``: what the project's webhooks are, and whether
one answers (the "check" button of a flow builder)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from flowrunner.errors import InvalidProject, TemplateError, UsageError
from flowrunner.net import request as wire
from flowrunner.net import signing
from flowrunner.plan.types import CompiledProject, CompiledWebhook
from flowrunner.project import load_project, require_root
from flowrunner.secrets import Secrets, read_secrets_file
from flowrunner.source import model as m
from flowrunner.templating import Variables, format_text, suggest

TICK, CROSS = "✓", "✗"


def _project(project_dir: Path | None) -> CompiledProject:
    cproject, diags = load_project(require_root(project_dir))
    if cproject is None or any(d.severity == "error" for d in diags):
        raise InvalidProject(diags)
    return cproject


def _auth_kind(auth: m.Auth) -> str:
    if isinstance(auth, m.BasicAuth):
        return f"basic ({auth.username}, password from ${auth.password.name})"
    if isinstance(auth, m.BearerAuth):
        return f"bearer (token from ${auth.token.name})"
    return "none"


def list_webhooks(project_dir: Path | None) -> str:
    """One block per webhook: URL, method, body, auth, timeout, methods."""
    cproject = _project(project_dir)
    lines = []
    for hook in cproject.project.webhooks.values():
        default = "  [default: receives on-complete pushes]" if hook.default else ""
        lines.append(f"{hook.name}{default}")
        lines.append(f"  {hook.method} {hook.url}  body: {hook.body}  timeout: {hook.timeout:g}s")
        lines.append(f"  auth: {_auth_kind(hook.auth)}")
        if hook.signing_secret is not None:
            lines.append(f"  signed with ${hook.signing_secret.name}")
        for method in hook.methods.values():
            mapped = ", ".join(f"{k} <- {v}" for k, v in method.response.items())
            lines.append(f"  - {method.name}: {method.description or ''}".rstrip())
            if mapped:
                lines.append(f"      maps {mapped}")
    return "\n".join(lines) if lines else "no webhooks in this project"


def check_webhook(
    project_dir: Path | None, name: str, secrets_file: Path | None, transport: str | None = None
) -> tuple[bool, str]:
    """Send one empty request with the webhook's auth (over ``transport``, see
    :mod:`flowrunner.net.transport`); ``(ok, message)``."""
    cproject = _project(project_dir)
    cw = cproject.webhooks.get(name)
    if cw is None:
        hint = suggest(name, cproject.webhooks)
        extra = f" (did you mean '{hint}'?)" if hint else ""
        raise UsageError(f"no webhook named '{name}'{extra}")
    secrets = Secrets(extra=read_secrets_file(secrets_file) if secrets_file else None)
    return asyncio.run(_check(cproject.project, cw, secrets, transport))


async def _check(
    project: m.Project, cw: CompiledWebhook, secrets: Secrets, transport: str | None
) -> tuple[bool, str]:
    from flowrunner.net.request import HttpRequest
    from flowrunner.net.transport import open_client

    hook = cw.webhook
    try:
        url = format_text(cw.url.render(Variables(call={}, flow={}, user={}, sys={})))
    except TemplateError as exc:
        return False, f"{CROSS} {hook.name}: the URL needs execution data ({exc.bare_message})"
    headers = {"User-Agent": wire.USER_AGENT, **wire.auth_headers(hook, secrets)}
    if hook.signing_secret is not None:
        secret = secrets.resolve(hook.signing_secret)
        headers.update(signing.headers(secret, f"check_{int(time.time())}", int(time.time()), b""))
    async with open_client(project.http, transport=transport) as client:
        answer = await client.send(
            HttpRequest(method=hook.method, url=url, headers=headers, timeout=hook.timeout)
        )
    return _verdict(hook.name, url, answer.status, answer.failure, answer.message, answer.duration)


def _verdict(
    name: str, url: str, status: int | None, failure: str | None, message: str, duration: float
) -> tuple[bool, str]:
    took = f"{duration * 1000:.0f} ms"
    if failure is not None:
        return False, f"{CROSS} {name}: {url} not reachable: {message}"
    assert status is not None
    if status in (401, 403):
        return (
            False,
            f"{CROSS} {name}: reachable, but the credentials were rejected (HTTP {status})",
        )
    if status == 404:
        return False, f"{CROSS} {name}: {url} answered HTTP 404 (is the URL right?)"
    if 300 <= status < 400:
        return False, f"{CROSS} {name}: answered with a redirect (HTTP {status}); not followed"
    if status >= 500:
        return False, f"{CROSS} {name}: the server failed (HTTP {status})"
    note = "" if status < 300 else f"; the empty check request itself was refused (HTTP {status})"
    return True, f"{TICK} {name}: reachable, auth accepted (HTTP {status}, {took}){note}"
