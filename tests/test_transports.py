"""Both HTTP transports against raw TCP servers on 127.0.0.1: the bytes they write, and
how they read answers that are compressed, chunked, interim, unframed or hostile."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowrunner.net.request import MAX_BODY, HttpRequest, HttpResponse
from flowrunner.net.transport import TRANSPORTS, open_client, transport_name
from flowrunner.source.model import HttpPolicy

LOCAL = HttpPolicy(allow_http=True, allowlist=("127.0.0.1",))
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request, head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


class RawServer:
    """A TCP server on 127.0.0.1 running ``handler`` for each connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


def answering(*replies: bytes) -> Handler:
    """A handler that reads a request and writes the next reply, then hangs up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            await read_request(reader)
            writer.write(reply)
            await writer.drain()

    return handler


async def send(url: str, transport: str, **kwargs: object) -> HttpResponse:
    async with open_client(LOCAL, transport=transport) as client:
        method = str(kwargs.pop("method", "GET"))
        return await client.send(HttpRequest(method=method, url=url, **kwargs))  # type: ignore[arg-type]


def response(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


# the choice


def test_the_choice(monkeypatch):
    monkeypatch.delenv("FLOWRUNNER_TRANSPORT", raising=False)
    assert transport_name() == "fast"  # httptools is a dependency
    assert transport_name("aiohttp") == "aiohttp"
    monkeypatch.setenv("FLOWRUNNER_TRANSPORT", "AIOHTTP")
    assert transport_name() == "aiohttp"
    assert transport_name("fast") == "fast"  # the option wins over the environment
    monkeypatch.setenv("FLOWRUNNER_TRANSPORT", "curl")
    with pytest.raises(ValueError, match="unknown HTTP transport 'FLOWRUNNER_TRANSPORT=curl'"):
        transport_name()


# the wire: both transports write the same bytes

WIRE_CASES = [
    ("GET", None, {}),
    ("POST", b'{"a": 1}', {"Content-Type": "application/json", "Idempotency-Key": "e:s"}),
    ("POST", None, {}),
    ("DELETE", None, {"Authorization": "Bearer t"}),
    ("PUT", b"x", {"user-agent": "custom/1", "accept": "text/plain"}),
    ("GET", None, {"Host": "example.com"}),
    ("patch", b"", {"X-Name": "Zoë"}),
    ("GET", None, {"Accept-Encoding": "identity"}),
    ("GET", b"abc", {"content-type": "text/plain", "X-Dup": "1", "x-dup": "2"}),
]


async def test_both_transports_write_the_same_bytes():
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(response(b"ok", "Content-Length: 2"))
            await writer.drain()

    wire: dict[str, list[bytes]] = {}
    async with RawServer(record) as server:
        url = server.url + "/p/a th?q=1&r=é#fragment"
        for transport in TRANSPORTS:
            seen.clear()
            async with open_client(LOCAL, transport=transport) as client:
                for method, body, headers in WIRE_CASES:
                    request = HttpRequest(method=method, url=url, headers=headers, body=body)
                    assert (await client.send(request)).status == 200
            wire[transport] = list(seen)
    assert len(wire["fast"]) == len(WIRE_CASES)
    assert wire["fast"] == wire["aiohttp"]
    assert wire["fast"][0].startswith(b"GET /p/a%20th?q=1&r=%C3%A9 HTTP/1.1\r\nHost: 127.0.0.1:")


# answers


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("encoding", "packed"),
    [("gzip", gzip.compress(b"hello " * 1000)), ("deflate", zlib.compress(b"hello " * 1000))],
)
async def test_compressed_answers_are_decoded(transport, encoding, packed):
    reply = response(packed, f"Content-Encoding: {encoding}", f"Content-Length: {len(packed)}")
    async with RawServer(answering(reply)) as server:
        answer = await send(server.url + "/", transport)
    assert (answer.status, answer.body) == (200, b"hello " * 1000)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_compression_bomb_is_cut_at_the_limit(transport):
    packed = gzip.compress(b"\0" * (8 * MAX_BODY))  # 8 MiB that travel as about 8 KiB
    assert len(packed) < MAX_BODY // 64
    reply = response(packed, "Content-Encoding: gzip", f"Content-Length: {len(packed)}")
    async with RawServer(answering(reply)) as server:
        answer = await send(server.url + "/", transport)
    assert (answer.status, answer.failure, answer.body) == (200, "too_large", None)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_compressed_body_of_exactly_the_limit_is_fine(transport):
    packed = gzip.compress(b"a" * MAX_BODY)
    reply = response(packed, "Content-Encoding: gzip", f"Content-Length: {len(packed)}")
    async with RawServer(answering(reply)) as server:
        answer = await send(server.url + "/", transport)
    assert answer.failure is None and answer.body == b"a" * MAX_BODY


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_damaged_compressed_body_is_a_failure(transport):
    packed = b"\x1f\x8b\x08\x00garbage-not-gzip"
    reply = response(packed, "Content-Encoding: gzip", f"Content-Length: {len(packed)}")
    async with RawServer(answering(reply)) as server:
        answer = await send(server.url + "/", transport)
    assert (answer.status, answer.failure) == (None, "connection")
    assert answer.message == "response body could not be read"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chunked_answer(transport):
    chunks = b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    reply = response(chunks, "Transfer-Encoding: chunked", "X-Seen: yes")
    async with RawServer(answering(reply)) as server:
        answer = await send(server.url + "/", transport)
    assert (answer.status, answer.body) == (200, b"hello world")
    assert answer.headers["x-seen"] == "yes"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_interim_answer_is_skipped(transport):
    final = response(b"{}", "Content-Length: 2", status="201 Created")
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + final
    async with RawServer(answering(reply)) as server:
        answer = await send(server.url + "/", transport, method="POST", body=b"x")
    assert (answer.status, answer.body) == (201, b"{}")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_answer_without_length_ends_with_the_connection(transport):
    async with RawServer(answering(response(b"until the end", "Connection: close"))) as server:
        answer = await send(server.url + "/", transport)
    assert (answer.status, answer.body) == (200, b"until the end")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unframed_answer_over_the_limit_is_cut(transport):
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(b"", "Connection: close"))
        for _ in range(64):  # 4 MiB, never announced
            writer.write(b"x" * 65536)
            await writer.drain()

    async with RawServer(flood) as server:
        answer = await send(server.url + "/", transport)
    assert (answer.status, answer.failure) == (200, "too_large")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "head",
    [
        "X-Long: " + "a" * 70_000,  # one header far over any sane size
        "\r\n".join(f"X-{i}: v" for i in range(5000)),  # a flood of headers
    ],
)
async def test_an_oversized_head_is_refused(transport, head):
    reply = response(b"ok", head, "Content-Length: 2")
    async with RawServer(answering(reply)) as server:
        answer = await send(server.url + "/", transport)
    assert (answer.status, answer.failure) == (None, "connection")
    assert answer.message == "invalid HTTP response"


@pytest.mark.parametrize("interim", [False, True], ids=["plain", "after-100-continue"])
@pytest.mark.parametrize(
    ("head", "refused"),
    [
        ("X-Long: " + "a" * 8190, False),  # a value of exactly the limit
        ("X-Long: " + "a" * 8191, True),
        ("X-" + "n" * 8188 + ": v", False),  # a name of exactly the limit
        ("X-" + "n" * 8189 + ": v", True),
        ("\r\n".join(f"X-{i}: v" for i in range(127)), False),  # 128 with Content-Length
        ("\r\n".join(f"X-{i}: v" for i in range(128)), True),
    ],
    ids=["value-8190", "value-8191", "name-8190", "name-8191", "128-headers", "129-headers"],
)
async def test_the_fast_transports_limits_on_an_answers_head(head, refused, interim):
    reply = response(b"ok", head, "Content-Length: 2")
    if interim:  # the final answer in the same packet as the interim one
        reply = b"HTTP/1.1 100 Continue\r\n\r\n" + reply
    async with RawServer(answering(reply)) as server:
        answer = await send(server.url + "/", "fast", method="POST", body=b"x")
    if refused:
        assert (answer.status, answer.message) == (None, "invalid HTTP response")
    else:
        assert (answer.status, answer.body, answer.failure) == (200, b"ok", None)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_endless_head_ends_at_the_deadline_or_the_limit(transport):
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):
            writer.write(f"X-{i}: {'v' * 100}\r\n".encode())
            await writer.drain()

    async with RawServer(endless) as server:
        answer = await send(server.url + "/", transport, timeout=5)
    assert answer.status is None and answer.failure in ("connection", "timeout")


# the pool


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_connection_the_server_closed_is_not_reused(transport):
    async with RawServer(answering(response(b"1", "Content-Length: 1"))) as server:
        async with open_client(LOCAL, transport=transport) as client:
            request = HttpRequest(method="GET", url=server.url + "/")
            first = await client.send(request)
            await asyncio.sleep(0.1)  # the server hung up after one answer
            second = await client.send(request)
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_keep_alive_and_the_limit_on_connections(transport):
    busy = 0
    most = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busy, most
        while True:
            await read_request(reader)
            busy += 1
            most = max(most, busy)
            await asyncio.sleep(0.02)
            busy -= 1
            writer.write(response(b"ok", "Content-Length: 2"))
            await writer.drain()

    async with RawServer(slow) as server:
        async with open_client(LOCAL, limit=3, transport=transport) as client:
            request = HttpRequest(method="POST", url=server.url + "/", body=b"x")
            answers = await asyncio.gather(*(client.send(request) for _ in range(30)))
    assert [a.status for a in answers] == [200] * 30
    assert most <= 3 and server.connections == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_cancelled_send_leaves_the_client_usable(transport):
    async def stall_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if server.connections == 1:
            await asyncio.sleep(10)
        writer.write(response(b"ok", "Content-Length: 2"))
        await writer.drain()

    async with RawServer(stall_once) as server:
        async with open_client(LOCAL, limit=1, transport=transport) as client:
            request = HttpRequest(method="GET", url=server.url + "/")
            task = asyncio.create_task(client.send(request))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            answer = await client.send(request)
    assert answer.status == 200


# the command line


FLOW = """\
flow: call
steps:
  - id: call
    webhook: sink
    method: m
"""


def sink_project(root, url: str):
    from conftest import write_project

    hooks = {"sink": {"url": url, "timeout": 5, "methods": {"m": {}}}}
    return write_project(root, hooks, {"call": FLOW})


@pytest.fixture
def senders(monkeypatch) -> list[str]:
    """The name of the transport class of every send, in order (each send still runs)."""
    from flowrunner.net.fast import FastClient
    from flowrunner.net.http import HttpClient

    seen: list[str] = []
    for cls in (HttpClient, FastClient):
        real = cls.send

        async def send(self, request, real=real):
            seen.append(type(self).__name__)
            return await real(self, request)

        monkeypatch.setattr(cls, "send", send)
    return seen


@pytest.mark.parametrize(("how", "expected"), [
    (["--transport", "aiohttp"], "HttpClient"), (["--transport", "fast"], "FastClient"),
    ([], "FastClient"),
])  # fmt: skip
async def test_run_sends_over_the_chosen_transport(tmp_path, receiver, senders, how, expected):
    from conftest import invoke_async

    sink_project(tmp_path, receiver.at("/hook"))
    result = await invoke_async(tmp_path, "run", "call", *how, env={"FLOWRUNNER_TRANSPORT": ""})
    assert result.exit_code == 0, result.output
    assert senders == [expected] and len(receiver.hits("/hook")) == 1


@pytest.mark.parametrize(("name", "expected"), [("aiohttp", "HttpClient"), ("fast", "FastClient")])
async def test_the_environment_variable_chooses(tmp_path, receiver, senders, name, expected):
    from conftest import invoke_async

    sink_project(tmp_path, receiver.at("/hook"))
    check = await invoke_async(
        tmp_path, "webhooks", "check", "sink", env={"FLOWRUNNER_TRANSPORT": name}
    )
    run = await invoke_async(tmp_path, "run", "call", env={"FLOWRUNNER_TRANSPORT": name})
    assert (check.exit_code, run.exit_code) == (0, 0), check.output + run.output
    assert senders == [expected, expected]


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--transport", "curl"], {}), ([], {"FLOWRUNNER_TRANSPORT": "curl"})],
)
def test_an_unknown_transport_is_a_usage_error(tmp_path, args, env):
    from conftest import invoke

    sink_project(tmp_path, "http://127.0.0.1:9/hook")
    for command in (["run", "call"], ["deliveries", "drain"], ["webhooks", "check", "sink"]):
        result = invoke(tmp_path, *command, *args, env=env)
        assert result.exit_code == 2, (command, result.output)
        assert "Invalid value for '--transport'" in result.output
        assert "'curl' is not one of 'fast', 'aiohttp'" in result.output


def test_worker_processes_get_the_chosen_transport(tmp_path):
    from flowrunner.cli.run import _worker_commands

    commands = _worker_commands(tmp_path, "call", [2, 2], None, False, True, False, "aiohttp")
    assert all(c[-4:-2] == ["--transport", "aiohttp"] for c in commands)
    assert all("--transport" not in c for c in _worker_commands(
        tmp_path, "call", [2, 2], None, False, True, False, None
    ))  # fmt: skip


# TLS: verified, against the URL's host name


@pytest.fixture
def tls_files(tmp_path):
    """A self-signed certificate for tls.example.test (and 127.0.0.1), and its key."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=tls.example.test",
         "-addext", "subjectAltName=DNS:tls.example.test,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize(("name", "outcome"), [("tls.example.test", 200), ("other.test", None)])
async def test_fast_tls_is_verified_against_the_urls_host(tls_files, monkeypatch, name, outcome):
    import socket
    import ssl

    cert, key = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted as a CA by the default context
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1", *a, **k))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            writer.write(response(b"ok", "Content-Length: 2"))
            await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    policy = HttpPolicy(allowlist=("127.0.0.1",))
    try:
        async with open_client(policy, transport="fast") as client:
            answer = await client.send(HttpRequest(method="GET", url=f"https://{name}:{port}/"))
    finally:
        server.close()
        await server.wait_closed()
    assert answer.status == outcome
    if outcome is None:
        assert answer.failure == "connection"
        assert answer.message == (
            "TLS certificate verify failed "
            "(Hostname mismatch, certificate is not valid for 'other.test'.)"
        )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_deadline_covers_waiting_for_a_connection(transport):
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1.5)
        writer.write(response(b"ok", "Content-Length: 2"))
        await writer.drain()

    async with RawServer(slow) as server:
        async with open_client(LOCAL, limit=1, transport=transport) as client:
            first = client.send(HttpRequest(method="GET", url=server.url + "/", timeout=5))
            second = client.send(HttpRequest(method="GET", url=server.url + "/", timeout=0.3))
            answers = await asyncio.gather(first, second)
    assert answers[0].status == 200
    assert (answers[1].failure, answers[1].message) == ("timeout", "no answer within 0.3 s")
    assert answers[1].duration < 1.4


BAD_URLS = [
    "", "not a url", "http://", "http://[::1", "http://127.0.0.1:99999/", "ftp://127.0.0.1/",
    "http://u:p@127.0.0.1/", "//127.0.0.1/x", "http://127.0.0.1:0/", "http://%00/",
    "http://0x7f000001/", "https://[fe80::1%25eth0]/",
]  # fmt: skip


@pytest.mark.parametrize("url", BAD_URLS)
async def test_both_transports_turn_bad_urls_into_the_same_failure(url):
    outcomes = []
    for transport in TRANSPORTS:
        async with open_client(LOCAL, transport=transport) as client:
            answer = await client.send(HttpRequest(method="GET", url=url, timeout=2))
        assert answer.status is None and answer.failure is not None, (transport, answer)
        outcomes.append((answer.failure, answer.message))
    assert outcomes[0] == outcomes[1]


def test_answer_headers_are_looked_up_without_regard_to_case() -> None:
    from flowrunner.net.request import AnswerHeaders

    headers = AnswerHeaders([(b"Retry-After", b"5"), (b"X-Tag", b"a"), (b"x-tag", b"b")])
    assert headers.get("retry-after") == headers["RETRY-AFTER"] == "5"
    assert headers.get("X-TAG") == "a"  # the first of a repeated name
    assert headers.get("missing") is None
    with pytest.raises(KeyError):
        headers["missing"]
    assert list(headers) == ["Retry-After", "X-Tag", "x-tag"]
    assert len(headers) == 3
    assert "x-tag" in headers


# ---- the request head: a straight path for headers that shape nothing ------------

_header_names = st.sampled_from(
    ["X-A", "x-b", "User-Agent", "user-agent", "Content-Type", "Idempotency-Key", "webhook-id"]
)
_header_values = st.sampled_from(["1", "", "v a l", "a\r\nb", "x\ny", "é", "close"])


@given(
    st.dictionaries(_header_names, _header_values, max_size=6),
    st.sampled_from(["GET", "POST", "HEAD", "PATCH"]),
    st.sampled_from([None, b"", b"abc"]),
    st.sampled_from(["ex.com", "ex.com:8443", "bad\r\nhost"]),
)
@settings(max_examples=300, deadline=None)
def test_the_straight_head_is_the_general_heads_bytes(headers, method, body, host):
    """Without a name that shapes the head (host, connection, accept, accept-encoding,
    content-length) or two names differing in case, the head is written straight
    through: it must be the same bytes as the general path, refusals included."""
    from flowrunner.net import connection

    names = [name.lower() for name in headers]
    if len(set(names)) != len(names):
        return  # the general path alone takes these

    def made(write: Callable[[], object]) -> object:
        try:
            return write()
        except ValueError as exc:
            return ("refused", str(exc))

    target, agent = "/p?q", "fr/1"
    general = made(lambda: connection._any_head(method, target, host, headers, body, agent))
    straight = made(
        lambda: (connection._plain_head(method, target, host, headers, names, body, agent), False)
    )
    assert straight == general  # (head, close): no Connection header, so never close
    assert made(lambda: connection.request_head(method, target, host, headers, body, agent)) == (
        general
    )
