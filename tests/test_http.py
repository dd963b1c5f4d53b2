"""The HTTP client against real servers on 127.0.0.1: wire, outcomes, egress, TLS."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess

import pytest
from aiohttp import web

from flowrunner.net.egress import EgressPolicy
from flowrunner.net.http import _EgressResolver
from flowrunner.net.request import MAX_BODY, USER_AGENT, HttpRequest
from flowrunner.net.transport import open_client
from flowrunner.source.model import HttpPolicy

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports

LOCAL = HttpPolicy(allow_http=True, allowlist=("127.0.0.1",))
STANDARD = {"host", "user-agent", "accept", "accept-encoding", "content-length"}


class Recorder:
    """A server that records every request and answers by path."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": dict(request.headers),
                "body": await request.read(),
                "port": request.transport.get_extra_info("peername")[1],
            }
        )
        return await ANSWERS.get(request.path, ok)(request)


async def ok(request):
    return web.json_response({"ok": True}, headers={"Retry-After": "120"})


async def status(request):
    return web.Response(status=int(request.query["code"]), text="nope")


async def redirect(request):
    return web.Response(status=302, headers={"Location": request.query["to"]})


async def slow(request):
    await asyncio.sleep(5)
    return web.Response(text="late")


async def big(request):
    return web.Response(body=b"x" * (2 * MAX_BODY))


async def big_chunked(request):
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(40):
        await response.write(b"y" * 65536)
    return response


async def exact(request):
    return web.Response(body=b"z" * MAX_BODY)


async def cookie(request):
    response = web.Response(text="ok")
    response.set_cookie("session", "s3cret")
    return response


ANSWERS = {
    "/status": status,
    "/redirect": redirect,
    "/slow": slow,
    "/big": big,
    "/big-chunked": big_chunked,
    "/exact": exact,
    "/cookie": cookie,
}


async def start(aiohttp_server, **kwargs) -> Recorder:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = await aiohttp_server(app, **kwargs)
    scheme = "https" if kwargs.get("ssl") else "http"
    recorder.url = f"{scheme}://127.0.0.1:{server.port}"
    return recorder


@pytest.fixture
async def server(aiohttp_server):
    return await start(aiohttp_server)


@pytest.fixture
async def canary(aiohttp_server):
    """A server that must never be reached."""
    return await start(aiohttp_server)


async def send(policy: HttpPolicy, url: str, **kwargs):
    async with open_client(policy) as client:
        return await client.send(HttpRequest(method=kwargs.pop("method", "GET"), url=url, **kwargs))


# the wire


async def test_request_arrives_exactly(server):
    headers = {"Content-Type": "application/json", "Idempotency-Key": "e1:s1", "X-Team": "ivr"}
    body = b'{"method": "getOrderStatus"}'
    url = server.url + "/flows?method=getOrderStatus&call.cli=%2B4930123"
    response = await send(LOCAL, url, method="POST", headers=headers, body=body)
    assert response.status == 200 and response.failure is None
    assert response.body == b'{"ok": true}'
    [seen] = server.requests
    assert seen["method"] == "POST"
    assert seen["path"] == "/flows"
    assert seen["query"] == "method=getOrderStatus&call.cli=%2B4930123"
    assert seen["body"] == body
    for name, value in headers.items():
        assert seen["headers"][name] == value
    assert seen["headers"]["User-Agent"] == USER_AGENT
    assert {h.lower() for h in seen["headers"]} == STANDARD | {h.lower() for h in headers}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_methods(server, method):
    response = await send(LOCAL, server.url + "/m", method=method)
    assert response.status == 200
    assert server.requests[0]["method"] == method
    assert "Content-Type" not in server.requests[0]["headers"]


async def test_body_without_content_type_gets_none_added(server):
    await send(LOCAL, server.url + "/", method="POST", body=b"a=1")
    assert "Content-Type" not in server.requests[0]["headers"]


async def test_user_agent_can_be_set_by_the_request(server):
    await send(LOCAL, server.url + "/", headers={"user-agent": "custom/1"})
    assert server.requests[0]["headers"]["User-Agent"] == "custom/1"


async def test_response_headers_are_kept_case_insensitive(server):
    response = await send(LOCAL, server.url + "/")
    assert response.headers["retry-after"] == "120"
    assert response.headers["Retry-After"] == "120"


async def test_cookies_are_not_kept(server):
    async with open_client(LOCAL) as client:
        await client.send(HttpRequest(method="GET", url=server.url + "/cookie"))
        await client.send(HttpRequest(method="GET", url=server.url + "/"))
    assert "Cookie" not in server.requests[1]["headers"]


async def test_one_session_is_reused(server):
    async with open_client(LOCAL) as client:
        for _ in range(3):
            response = await client.send(HttpRequest(method="GET", url=server.url + "/"))
            assert response.status == 200
    assert len({seen["port"] for seen in server.requests}) == 1  # one kept-alive connection


async def test_a_closed_client_opens_a_new_pool(server):
    client = open_client(LOCAL)
    await client.close()  # closing an unused client is fine
    assert (await client.send(HttpRequest(method="GET", url=server.url + "/"))).status == 200
    await client.close()
    assert (await client.send(HttpRequest(method="GET", url=server.url + "/"))).status == 200
    await client.close()


# answers and failures


async def test_redirect_is_an_answer_not_followed(server, canary):
    response = await send(LOCAL, server.url + f"/redirect?to={canary.url}/")
    assert response.status == 302 and response.failure is None
    assert response.headers["Location"] == canary.url + "/"
    assert canary.requests == []


@pytest.mark.parametrize("code", [400, 404, 429, 500, 503])
async def test_error_statuses_are_answers(server, code):
    response = await send(LOCAL, server.url + f"/status?code={code}")
    assert (response.status, response.body, response.failure) == (code, b"nope", None)


async def test_timeout(server):
    response = await send(LOCAL, server.url + "/slow", timeout=0.5)
    assert response.failure == "timeout"
    assert response.status is None and response.body is None
    assert response.message == "no answer within 0.5 s"
    assert 0.5 <= response.duration < 3


async def test_zero_timeout_is_not_unlimited(server):
    response = await send(LOCAL, server.url + "/slow", timeout=0)
    assert response.failure == "timeout"


async def raw_server(reply: bytes) -> tuple[asyncio.Server, str]:
    """A TCP server that reads the request head, writes ``reply`` and hangs up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    tcp = await asyncio.start_server(answer, "127.0.0.1", 0)
    return tcp, f"http://127.0.0.1:{tcp.sockets[0].getsockname()[1]}/"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "server disconnected without answering"),
        (b"NOT HTTP AT ALL\r\n\r\n", "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "response body could not be read"),
    ],
)
async def test_broken_servers(reply, message):
    tcp, url = await raw_server(reply)
    async with tcp:
        response = await send(LOCAL, url)
    assert (response.failure, response.message, response.status) == ("connection", message, None)


@pytest.mark.parametrize(
    ("method", "headers"), [("GET", {"X-Note": "a\r\nInjected: 1"}), ("GE T", {})]
)
async def test_unsendable_request(server, method, headers):
    response = await send(LOCAL, server.url + "/", method=method, headers=headers)
    assert response.failure == "connection"
    assert response.message == "request could not be sent (invalid header or method)"
    assert server.requests == []


async def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    response = await send(LOCAL, f"http://127.0.0.1:{port}/")
    assert (response.failure, response.message, response.status) == (
        "connection",
        "connection refused",
        None,
    )
    assert response.duration > 0


async def test_name_not_resolved():
    policy = HttpPolicy(allow_http=True)
    response = await send(policy, "http://no-such-host.invalid/", timeout=5)
    assert (response.failure, response.message) == ("connection", "name not resolved")


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_too_large(server, path):
    response = await send(LOCAL, server.url + path)
    assert response.failure == "too_large"
    assert response.status == 200 and response.body is None
    assert response.message == f"response body over {MAX_BODY} bytes"


async def test_body_of_exactly_the_limit_is_fine(server):
    response = await send(LOCAL, server.url + "/exact")
    assert response.failure is None and len(response.body or b"") == MAX_BODY


async def test_disabled_sends_nothing(server):
    policy = HttpPolicy(enabled=False, allow_http=True, allowlist=("127.0.0.1",))
    response = await send(policy, server.url + "/")
    assert response.failure == "disabled"
    assert response.message == "HTTP is disabled (http.enabled: false)"
    assert response.status is None and response.duration >= 0
    assert server.requests == []


async def test_proxies_in_the_environment_are_ignored(server, canary, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, canary.url)
    response = await send(LOCAL, server.url + "/")
    assert response.status == 200
    assert len(server.requests) == 1 and canary.requests == []


# egress


async def test_loopback_refused_without_allowlist(canary):
    response = await send(HttpPolicy(allow_http=True), canary.url + "/")
    assert response.failure == "refused"
    assert response.message == "127.0.0.1 is a loopback address (not on the allowlist)"
    assert canary.requests == []


async def test_loopback_allowed_when_listed(canary):
    response = await send(LOCAL, canary.url + "/")
    assert response.status == 200 and len(canary.requests) == 1


async def test_plain_http_refused_unless_allowed(canary):
    response = await send(HttpPolicy(allowlist=("127.0.0.1",)), canary.url + "/")
    assert response.failure == "refused"
    assert response.message.startswith("plain http is refused")
    assert canary.requests == []


async def test_userinfo_refused(canary):
    response = await send(LOCAL, canary.url.replace("://", "://u:p@") + "/")
    assert response.failure == "refused" and "credentials" in response.message
    assert canary.requests == []


async def test_localhost_refused_without_allowlist(canary):
    url = canary.url.replace("127.0.0.1", "localhost") + "/"
    response = await send(HttpPolicy(allow_http=True), url)
    assert response.failure == "refused"
    assert "is a loopback address (not on the allowlist)" in response.message
    assert canary.requests == []


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "127.0.0.1."])
@pytest.mark.parametrize("allowlist", [(), ("127.0.0.1",)])
async def test_numeric_forms_refused(canary, host, allowlist):
    url = canary.url.replace("127.0.0.1", host) + "/"
    response = await send(HttpPolicy(allow_http=True, allowlist=allowlist), url)
    assert response.failure == "refused"
    assert response.message == (
        f"{host} is a non-canonical form of 127.0.0.1 (write IPv4 addresses as a dotted quad)"
    )
    assert canary.requests == []


async def test_mapped_ipv6_loopback_refused(canary):
    url = canary.url.replace("127.0.0.1", "[::ffff:127.0.0.1]") + "/"
    response = await send(HttpPolicy(allow_http=True), url)
    assert response.failure == "refused"
    assert response.message == (
        "::ffff:7f00:1 (127.0.0.1) is a loopback address (not on the allowlist)"
    )
    assert canary.requests == []


async def test_allowlisted_name_resolving_to_loopback(canary):
    url = canary.url.replace("127.0.0.1", "localhost") + "/"
    refused = await send(HttpPolicy(allow_http=True, allowlist=("localhost",)), url)
    assert refused.failure == "refused"
    assert refused.message.startswith("localhost is on the allowlist, but resolves to ")
    assert refused.message.endswith("itself to allow it")
    assert canary.requests == []
    policy = HttpPolicy(allow_http=True, allowlist=("localhost", "127.0.0.1"))
    allowed = await send(policy, url)
    assert allowed.status == 200 and len(canary.requests) == 1


async def test_resolver_keeps_only_allowed_addresses():
    policy = HttpPolicy(allow_http=True, allowlist=("localhost", "127.0.0.1"))
    resolver = _EgressResolver(EgressPolicy(policy))
    results = await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
    assert results and {r["host"] for r in results} == {"127.0.0.1"}
    await resolver.close()


# TLS


@pytest.fixture
def self_signed(tmp_path) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_self_signed_certificate_fails(aiohttp_server, self_signed):
    server = await start(aiohttp_server, ssl=self_signed)
    response = await send(HttpPolicy(allowlist=("127.0.0.1",)), server.url + "/")
    assert response.failure == "connection"
    assert response.message.startswith("TLS certificate verify failed")
    assert response.status is None
    assert server.requests == []
