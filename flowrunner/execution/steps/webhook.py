"""The webhook step: build the request, send it, set the outcome keys, map
the JSON answer into flow keys."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flowrunner.errors import StepFailure, TemplateError, Where
from flowrunner.execution import retry
from flowrunner.execution.context import Context, StepResult
from flowrunner.execution.record import StepTrace
from flowrunner.jsoncodec import dumps_strict, loads
from flowrunner.net import request as wire
from flowrunner.net import signing
from flowrunner.net.request import HttpRequest, HttpResponse
from flowrunner.plan.types import CompiledStep, CompiledWebhook
from flowrunner.secrets import scrub, scrub_value
from flowrunner.source import model as m
from flowrunner.templating import format_text

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"

# failure kind of the HTTP layer -> (response_status_type, error_reason)
FAILURES = {
    "timeout": ("Timeout", "TIMEOUT"),
    "connection": ("ConnectionError", "CONNECTION_ERROR"),
    "refused": ("Refused", "NOT_ALLOWED"),
    "too_large": ("TooLarge", "RESPONSE_TOO_LARGE"),
    "disabled": ("Refused", "HTTP_DISABLED"),
}


def _groups(step: m.WebhookStep, ctx: Context) -> list[tuple[str, Mapping[str, Any]]]:
    """The live variable groups the request carries: no copies, as the body is encoded
    before anything can change them."""
    v = ctx.variables
    sources: dict[str, Mapping[str, Any]] = {"call": v.call, "flow.key": v.flow, "user.key": v.user}
    return [(g, sources[g]) for g in step.parameters]


def _body(
    hook: m.Webhook,
    method: str,
    groups: list[tuple[str, Mapping[str, Any]]],
    params: dict[str, Any],
) -> tuple[str, bytes | None, str | None]:
    """``(query, body, content type)`` for the webhook's body kind."""
    if hook.body == "json":
        doc: dict[str, Any] = {"method": method}
        for group, values in groups:
            outer, _, inner = group.partition(".")
            doc[outer] = {inner: values} if inner else values
        if params:
            doc["params"] = params
        return "", dumps_strict(doc), JSON_TYPE
    encoded = wire.encode_form(wire.form_pairs(method, groups, params))
    if hook.body == "form":
        return "", encoded.encode(), FORM_TYPE
    return encoded, None, None


def _headers(cw: CompiledWebhook, ctx: Context, step_id: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in cw.headers.items():
        if isinstance(value, m.SecretRef):
            continue  # resolved with the auth headers
        text = format_text(value.render(ctx.variables))
        if "\r" in text or "\n" in text:
            where = Where(step=step_id, field=f"headers.{name}")
            raise TemplateError("header value contains a line break", where, "header-injection")
        headers[name] = text
    headers.update(wire.auth_headers(cw.webhook, ctx.services.secrets))
    return headers


def build_request(step: CompiledStep, ctx: Context) -> dict[str, Any]:
    """The request as data: method, url, headers, body (bytes or None), timeout."""
    request = prepare(step, ctx)
    return {
        "method": request.method,
        "url": request.url,
        "headers": request.headers,
        "body": request.body,
        "timeout": request.timeout,
    }


def prepare(step: CompiledStep, ctx: Context) -> HttpRequest:
    """The request to send."""
    cw = step.webhook
    webhook_step = step.step
    assert cw is not None and isinstance(webhook_step, m.WebhookStep)  # the compiler ensured it
    hook = cw.webhook
    variables = ctx.variables
    params = {name: c.render(variables) for name, c in step.params.items()}
    try:
        query, body, ctype = _body(hook, webhook_step.method, _groups(webhook_step, ctx), params)
    except UnicodeEncodeError:
        message = "a value to send is not valid Unicode (it holds a lone surrogate)"
        raise TemplateError(message, Where(step=webhook_step.id), "template-render") from None
    url = format_text(cw.url.render(variables))
    if query:
        url = _with_query(url, query)
    headers = _headers(cw, ctx, webhook_step.id)
    if ctype:
        headers["Content-Type"] = ctype
    headers["Idempotency-Key"] = msg_id = f"{ctx.execution_id}:{webhook_step.id}"
    headers["User-Agent"] = wire.USER_AGENT
    if hook.signing_secret is not None:
        secret = ctx.services.secrets.resolve(hook.signing_secret)
        headers.update(signing.headers(secret, msg_id, int(time.time()), body or b""))
    return HttpRequest(
        method=hook.method, url=url, headers=headers, body=body, timeout=hook.timeout
    )


def _with_query(url: str, query: str) -> str:
    """``url`` with ``query`` added to its query string (before any ``#fragment``, which
    is never sent: parameters after it would be lost)."""
    base, hash_, fragment = url.partition("#")
    return base + ("&" if "?" in base else "?") + query + hash_ + fragment


def _masked(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as a dry run shows them: credentials and signatures masked."""
    shown = dict(headers)
    if "Authorization" in shown:
        shown["Authorization"] = shown["Authorization"].split(" ", 1)[0] + " ***"
    if "webhook-signature" in shown:
        shown["webhook-signature"] = "v1,***"
    return shown


def _lookup(data: Any, path: str) -> Any:
    """The value at dotted ``path`` (``order.id``, ``items.0.sku``), or None."""
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _decode(body: bytes | None) -> str | None:
    return body.decode("utf-8", errors="replace") if body else None


def _outcome(status: int | None, failure: str | None) -> tuple[str | None, str | None]:
    if failure is not None:
        return FAILURES[failure]
    if status is None or 200 <= status < 300:  # None: a dry run's empty answer
        return None, None
    if 300 <= status < 400:
        return "Redirection", "REDIRECTION"
    if 400 <= status < 500:
        return "ClientError", "CLIENT_ERROR"
    return "ServerError", "SERVER_ERROR"


def _parse_json(raw: str | None) -> Any:
    """The JSON value of an answer, or None when it is not usable JSON.

    Not JSON (``NaN`` and ``Infinity`` included), nested too deep to parse, or holding a
    lone surrogate (a ``\\ud800`` escape, which could be neither sent on nor stored):
    mapped keys become null.
    """
    if not raw:
        return None
    try:
        return loads(raw.encode("utf-8"))
    except (ValueError, RecursionError):
        return None


def apply_answer(
    step: CompiledStep,
    ctx: Context,
    status: int | None,
    body: bytes | None,
    failure: str | None,
    duration: float,
) -> str | None:
    """Set the outcome keys (and the mapped keys on success); the error reason or None.

    The answer is scrubbed of every secret this process knows before it becomes a key:
    a receiver that echoes the request must not put its credentials into records,
    stored rows or pushed payloads."""
    status_type, reason = _outcome(status, failure)
    flow = ctx.variables.flow
    answer = _decode(body)
    raw = None if answer is None else scrub(answer)
    flow["response_status"] = "FAILED" if reason else "SUCCESS"
    flow["response_status_code"] = status
    flow["response_status_type"] = status_type
    flow["error_reason"] = reason
    flow["response_duration"] = round(duration, 6)
    flow["response_raw"] = raw
    flow["response_error"] = reason is not None
    if reason is None and step.method is not None and step.method.response:
        data = _parse_json(answer)
        for key, path in step.method.response.items():
            flow[key] = scrub_value(_lookup(data, path))
    return reason


async def run_webhook(step: CompiledStep, ctx: Context) -> StepResult:
    """Call the webhook, again while the step's retry policy allows; a non-2xx answer
    or no answer after the last attempt is a failed step."""
    began = time.perf_counter()
    request = prepare(step, ctx)
    shown: dict[str, Any] = {"method": request.method, "url": request.url}
    if ctx.services.dry_run:
        apply_answer(step, ctx, None, None, None, 0.0)
        shown["headers"] = _masked(request.headers)
        shown["body"] = _decode(request.body)
        return StepResult(trace=_trace(step, began, "ok", shown, None))
    if step.retry is None:  # one attempt: no coroutine around it
        client = ctx.services.client
        assert client is not None  # only a dry run has none
        answer, attempts = await client.send(request), 1
    else:
        answer, attempts = await _attempts(step, ctx, request)
    reason = apply_answer(step, ctx, answer.status, answer.body, answer.failure, answer.duration)
    response = {"status": answer.status}
    if reason is None:
        return StepResult(trace=_trace(step, began, "ok", shown, response, attempts=attempts))
    message = answer.message or f"HTTP {answer.status}"
    failure = StepFailure(step=step.step.id, reason=reason, message=message)
    trace = _trace(step, began, "failed", shown, response, message, attempts=attempts)
    return StepResult(trace=trace, failure=failure)


async def _attempts(
    step: CompiledStep, ctx: Context, request: HttpRequest
) -> tuple[HttpResponse, int]:
    """The last answer and the number of attempts: one, or as many as the retry policy
    allows while the failures are ones it retries. Every attempt carries the same
    ``Idempotency-Key``; a signed request is signed again with a fresh timestamp."""
    client = ctx.services.client
    assert client is not None  # only a dry run has none
    policy = step.retry
    attempt = 1
    while True:
        answer = await client.send(request)
        if (
            policy is None
            or attempt >= policy.attempts
            or not retry.retryable(policy, answer.status, answer.failure)
        ):
            return answer, attempt
        import asyncio  # here: a dry run, which never waits, runs without an event loop

        await asyncio.sleep(retry.wait(policy, attempt, answer.headers, time.time()))
        attempt += 1
        if step.webhook is not None and step.webhook.webhook.signing_secret is not None:
            request = prepare(step, ctx)


def _trace(
    step: CompiledStep,
    began: float,
    outcome: Any,
    request: dict[str, Any],
    response: dict[str, Any] | None,
    error: str | None = None,
    *,
    attempts: int | None = None,
) -> StepTrace:
    return StepTrace(
        id=step.step.id,
        kind="webhook",
        outcome=outcome,
        duration_ms=(time.perf_counter() - began) * 1000,
        request=request,
        response=response,
        error=error,
        webhook=step.webhook.webhook.name if step.webhook is not None else None,
        attempts=attempts,
    )
