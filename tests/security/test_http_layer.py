"""The HTTP layer on its own: whatever reaches it (a header with a line break, a method
or URL with one, plain http when it is not allowed), it neither injects nor connects
where it must not, and answers with a failure instead of raising."""

from __future__ import annotations

import asyncio

import pytest

from flowrunner.net.request import HttpRequest, HttpResponse
from flowrunner.net.transport import open_client
from flowrunner.source.model import HttpPolicy

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports

LOCAL = HttpPolicy(allow_http=True, allowlist=("127.0.0.1",))


def send(policy: HttpPolicy, **request: object) -> HttpResponse:
    async def go() -> HttpResponse:
        async with open_client(policy) as client:
            return await client.send(HttpRequest(**request))  # type: ignore[arg-type]

    return asyncio.run(go())


@pytest.mark.parametrize(
    "headers",
    [{"X-Caller": "a\r\nX-Injected: 1"}, {"X-Caller": "a\nX-Injected: 1"},
     {"X-Caller\r\nX-Injected": "1"}, {"X-Caller": "a\rX-Injected: 1"}],
)  # fmt: skip
def test_line_break_in_a_header_is_not_sent(server, headers):
    answer = send(LOCAL, method="POST", url=f"{server.url}/ok", headers=headers, timeout=1)
    assert (answer.status, answer.failure) == (None, "connection")
    assert answer.message == "request could not be sent (invalid header or method)"
    assert server.hits == []


def test_line_break_in_the_method_is_not_sent(server):
    answer = send(LOCAL, method="GET /x HTTP/1.1\r\nX-Injected: 1\r\n", url=f"{server.url}/")
    assert (answer.status, answer.failure) == (None, "connection")
    assert server.hits == []


def test_line_break_in_the_url_is_dropped(server):
    answer = send(LOCAL, method="GET", url=f"{server.url}/a\r\nX-Injected: 1", timeout=1)
    assert answer.status == 200
    (hit,) = server.hits
    assert "X-Injected" not in hit["headers"]
    assert hit["raw_path"] == "/aX-Injected:%201"  # URLs drop tabs and line breaks


def test_plain_http_refused_by_the_client(server):
    policy = HttpPolicy(allow_http=False, allowlist=("127.0.0.1",))
    answer = send(policy, method="GET", url=f"{server.url}/ok", timeout=1)
    assert (answer.status, answer.failure) == (None, "refused")
    assert answer.message == "plain http is refused (use https, or set http.allow_http: true)"
    assert server.hits == []


def test_disabled_client_sends_nothing(server):
    policy = HttpPolicy(enabled=False, allow_http=True, allowlist=("127.0.0.1",))
    answer = send(policy, method="GET", url=f"{server.url}/ok", timeout=1)
    assert (answer.failure, answer.message) == (
        "disabled",
        "HTTP is disabled (http.enabled: false)",
    )
    assert server.hits == []
