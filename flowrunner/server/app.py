"""The HTTP side of ``serve`` (aiohttp's server): routes, authentication, problem
details, one log line per request.

Every ``/v1`` route needs a bearer token. Errors are answered as problem details
(:mod:`flowrunner.server.problems`), whatever raised them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from flowrunner.batch.local import time_ordered_id
from flowrunner.errors import StateError
from flowrunner.jsoncodec import dumps, loads
from flowrunner.server import body
from flowrunner.server.auth import CHALLENGE
from flowrunner.server.problems import CONTENT_TYPE, Problem
from flowrunner.state.queue_values import NewRequest, QueuedCall

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON = "application/json"
MAX_ID = 200  # characters of an id in a path; longer ones are unknown
_KEY = re.compile(r"[\x21-\x7e]{1,255}\Z")  # an Idempotency-Key: visible ASCII


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type=JSON, headers=headers)


def _problem(problem: Problem, path: str) -> web.Response:
    response = web.Response(body=problem.body(path), status=problem.status, headers=problem.headers)
    response.content_type = CONTENT_TYPE
    return response


def make_app(api: Any) -> web.Application:
    """The application serving ``api`` (a :class:`flowrunner.server.main.Api`)."""

    @web.middleware
    async def logged(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        response = await _answer(request, handler, api)
        api.log.event(
            "request",
            method=request.method,
            path=request.path[:200],
            status=response.status,
            ms=round((time.monotonic() - started) * 1000, 2),
            request_id=response.headers.get("X-Request-Id"),
        )
        return response

    app = web.Application(middlewares=[logged], client_max_size=body.MAX_BODY)
    app.router.add_post("/v1/flows/{flow}/executions", api.post_executions)
    app.router.add_get("/v1/executions/{id}", api.get_execution)
    app.router.add_get("/v1/requests/{id}", api.get_request)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/metrics", api.metrics_text)
    app.router.add_get("/openapi.json", api.openapi)
    return app


async def listen(api: Any, host: str, port: int) -> tuple[Callable[[], Awaitable[None]], int]:
    """Serve ``api`` on ``host:port`` (0: any free port); returns a function that stops
    listening, and the port listened on."""
    runner = web.AppRunner(make_app(api), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    addresses = runner.addresses
    return runner.cleanup, (int(addresses[0][1]) if addresses else port)


async def _answer(request: web.Request, handler: Handler, api: Any) -> web.StreamResponse:
    """The handler's answer, or the problem that stopped it."""
    try:
        if request.path.startswith("/v1/") and not api.tokens.allows(
            request.headers.get("Authorization")
        ):
            raise Problem(
                "unauthorized",
                "send Authorization: Bearer <token> with a token of serve.tokens",
                headers={"WWW-Authenticate": CHALLENGE},
            )
        return await handler(request)
    except Problem as problem:
        return _problem(problem, request.path[:200])
    except web.HTTPException as exc:
        return _problem(_from_http(exc), request.path[:200])
    except StateError as exc:
        api.log.event("state-error", detail=str(exc))
        unavailable = Problem("unavailable", "the state store cannot be used now")
        return _problem(unavailable, request.path[:200])
    except Exception as exc:  # a bug: one line in the log, a problem for the client
        api.log.event("internal-error", detail=type(exc).__name__, path=request.path[:200])
        return _problem(Problem("internal", "internal error"), request.path[:200])


def _from_http(exc: web.HTTPException) -> Problem:
    """The problem for aiohttp's own answers (no route, method not allowed, too large)."""
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return Problem("method-not-allowed", f"allowed: {allowed}", headers={"Allow": allowed})
    if exc.status == 413:
        return Problem("too-large", f"the body is over {body.MAX_BODY} bytes")
    return Problem("not-found", "no such route")


async def read_body(request: web.Request) -> bytes:
    """The body, at most ``MAX_BODY`` bytes; raises :class:`Problem` ``too-large``."""
    length = request.content_length
    if length is not None and length > body.MAX_BODY:
        raise Problem("too-large", f"the body is over {body.MAX_BODY} bytes")
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > body.MAX_BODY:
            raise Problem("too-large", f"the body is over {body.MAX_BODY} bytes")
        parts.append(chunk)
    return b"".join(parts)


def check_json_type(request: web.Request) -> None:
    """Raises :class:`Problem` ``unsupported-media-type`` unless the body is JSON."""
    kind = request.content_type.lower()
    if kind != JSON and not (kind.startswith("application/") and kind.endswith("+json")):
        raise Problem("unsupported-media-type", "send Content-Type: application/json")


def idempotency_key(request: web.Request) -> str | None:
    """The request's Idempotency-Key, checked; raises :class:`Problem` ``bad-header``."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY.match(key):
        raise Problem("bad-header", "Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


def new_request(
    flow: str,
    calls: list[dict[str, Any]],
    key: str | None,
    print_: str,
    traceparent: str | None = None,
) -> NewRequest:
    """The request to queue for ``calls``, with its answer (ids made here); each
    execution's trace continues ``traceparent`` when the caller sent one."""
    request_id = time_ordered_id()
    queued = []
    listed = []
    for call in calls:
        execution_id = time_ordered_id()
        inputs = {k: call[k] for k in ("call", "keys", "user_keys")}
        if traceparent is not None:
            inputs["traceparent"] = traceparent
        queued.append(QueuedCall(execution_id=execution_id, inputs=inputs))
        entry = {"execution_id": execution_id}
        if "client-identifier" in call:
            entry = {"client-identifier": call["client-identifier"], **entry}
        listed.append(entry)
    answer = dumps({"request-id": request_id, "executions": listed}).decode()
    return NewRequest(
        request_id=request_id, flow=flow, calls=tuple(queued), answer=answer,
        idempotency_key=key, fingerprint=print_,
    )  # fmt: skip


def accepted(answer: str, *, replayed: bool) -> web.Response:
    """The 202 of a queued request (``replayed``: an Idempotency-Key replay)."""
    data = loads(answer.encode())
    headers = {
        "Location": f"/v1/requests/{data['request-id']}",
        "X-Request-Id": data["request-id"],
    }
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.Response(body=answer.encode(), status=202, content_type=JSON, headers=headers)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return _json(data, status)


def text_response(text: bytes, content_type: str) -> web.Response:
    """A plain answer of ``content_type`` (may carry parameters)."""
    return web.Response(body=text, headers={"Content-Type": content_type})
