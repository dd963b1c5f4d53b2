"""The HTTP transports alone: CPU per request of each client against one loopback sink.

    python bench/transport_bench.py [--count 20000] [--rounds 5]

Each client runs in its own process (the same event loop for all: uvloop when
installed), sends ``count`` POSTs of the benchmark's JSON body at concurrency 64 and
then at concurrency 1, and reports its requests per second and its own CPU time per
request (``time.process_time``, steadier than wall time on a shared machine). Rounds
are interleaved (A B C A B C ...) and medians printed, with ratios to the raw aiohttp
client measured in the same run.

Clients: ``raw-aiohttp`` (a plain ``ClientSession``, the baseline), ``aiohttp``
(flowrunner's aiohttp transport, :class:`flowrunner.net.http.HttpClient`), ``fast``
(:class:`flowrunner.net.fast.FastClient`) and, when ``pycurl`` is installed,
``curl-prototype``: libcurl's multi interface driven by the event loop's socket
callbacks, with the egress check in the open-socket callback. That last one is a
measurement prototype for comparing the two designs, not a transport flowrunner ships.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

BODY = json.dumps(
    {
        "method": "lookup",
        "call": {"uuid": "c-00000000-5f0e-4c1a-9d7e-3b2a1c0d9e8f", "cli": "+15550000000"},
        "flow": {"attempts": 0, "caller": "+15550000000"},
        "execution_id": "00000000-0000-0000-0000-000000000000",
    }
).encode()
HEADERS = {
    "Content-Type": "application/json",
    "Idempotency-Key": "00000000-0000-0000-0000-000000000000:lookup",
}

Send = Callable[[], Awaitable[None]]


def policy() -> Any:
    from flowrunner.source.model import HttpPolicy

    return HttpPolicy(allow_http=True, allowlist=("127.0.0.1",))


async def measure(send: Send, count: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, CPU µs per request) of ``count`` sends."""
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            await send()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return count / wall, cpu / count * 1e6


async def run_raw(url: str, count: int, concurrency: int) -> tuple[float, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as resp:
                json.loads(await resp.read())

        await measure(send, 200, concurrency)  # warm up: connections, caches
        return await measure(send, count, concurrency)


async def run_seam(kind: str, url: str, count: int, concurrency: int) -> tuple[float, float]:
    from flowrunner.net.request import HttpRequest
    from flowrunner.net.transport import open_client

    request = HttpRequest(method="POST", url=url, headers=HEADERS, body=BODY, timeout=10)
    async with open_client(policy(), limit=64, transport=kind) as client:

        async def send() -> None:
            answer = await client.send(request)
            assert answer.status == 200, answer
            json.loads(answer.body or b"")

        await measure(send, 200, concurrency)
        return await measure(send, count, concurrency)


class CurlPrototype:
    """libcurl's multi interface on the event loop (measurement only)."""

    def __init__(self) -> None:
        import pycurl

        from flowrunner.net.egress import EgressPolicy

        self.pycurl = pycurl
        self.loop = asyncio.get_running_loop()
        self.egress = EgressPolicy(policy())
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self.timer: asyncio.TimerHandle | None = None
        self.free: list[Any] = []
        self.waiting: dict[Any, tuple[asyncio.Future[tuple[int, bytes]], io.BytesIO]] = {}

    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        p = self.pycurl
        self.loop.remove_reader(fd)
        self.loop.remove_writer(fd)
        if what in (p.POLL_IN, p.POLL_INOUT):
            self.loop.add_reader(fd, self._act, fd, p.CSELECT_IN)
        if what in (p.POLL_OUT, p.POLL_INOUT):
            self.loop.add_writer(fd, self._act, fd, p.CSELECT_OUT)

    def _on_timer(self, ms: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        if ms >= 0:
            self.timer = self.loop.call_later(ms / 1000, self._act, self.pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, events: int) -> None:
        self.multi.socket_action(fd, events)
        while True:
            left, done, failed = self.multi.info_read()
            for handle in done:
                self._settle(handle, None)
            for handle, _code, message in failed:
                self._settle(handle, message)
            if not left:
                break

    def _settle(self, handle: Any, error: str | None) -> None:
        self.multi.remove_handle(handle)
        future, buffer = self.waiting.pop(handle)
        if error is None:
            future.set_result((handle.getinfo(self.pycurl.RESPONSE_CODE), buffer.getvalue()))
        else:
            future.set_exception(OSError(error))
        self.free.append(handle)

    def _open_socket(self, purpose: int, address: Any) -> Any:
        import socket

        host = address[3][0]
        if self.egress.check_addresses(host, [host])[1] is not None:
            return self.pycurl.SOCKET_BAD
        return socket.socket(address[0], address[1], address[2])

    async def post(self, url: str, body: bytes, headers: list[str]) -> tuple[int, bytes]:
        p = self.pycurl
        handle = self.free.pop() if self.free else p.Curl()
        buffer = io.BytesIO()
        handle.setopt(p.URL, url)
        handle.setopt(p.POSTFIELDS, body)
        handle.setopt(p.HTTPHEADER, headers)
        handle.setopt(p.WRITEDATA, buffer)
        handle.setopt(p.OPENSOCKETFUNCTION, self._open_socket)
        handle.setopt(p.NOSIGNAL, 1)
        handle.setopt(p.TIMEOUT_MS, 10_000)
        handle.setopt(p.MAXFILESIZE, 1 << 20)
        future = self.loop.create_future()
        self.waiting[handle] = (future, buffer)
        self.multi.add_handle(handle)
        return await future


async def run_curl(url: str, count: int, concurrency: int) -> tuple[float, float]:
    curl = CurlPrototype()
    headers = [f"{k}: {v}" for k, v in HEADERS.items()] + ["Expect:"]

    async def send() -> None:
        status, body = await curl.post(url, BODY, headers)
        assert status == 200
        json.loads(body)

    await measure(send, 200, concurrency)
    return await measure(send, count, concurrency)


def child(kind: str, port: int, count: int, concurrency: int) -> None:
    url = f"http://127.0.0.1:{port}/api"
    if kind == "raw-aiohttp":
        job = run_raw(url, count, concurrency)
    elif kind == "curl-prototype":
        job = run_curl(url, count, concurrency)
    else:
        job = run_seam(kind, url, count, concurrency)
    try:
        import uvloop

        rate, cpu = uvloop.run(job)
    except ImportError:
        rate, cpu = asyncio.run(job)
    print(rate, cpu)


def measure_child(kind: str, port: int, count: int, concurrency: int) -> tuple[float, float]:
    args = [sys.executable, __file__, "_child", kind, str(port), str(count), str(concurrency)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    kinds = ["raw-aiohttp", "aiohttp", "fast"]
    if importlib.util.find_spec("pycurl") is not None:
        kinds.append("curl-prototype")
    uvloop = importlib.util.find_spec("uvloop") is not None
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    sink = subprocess.Popen(
        [sys.executable, str(HERE / "sink.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline().split()[1])
        measure_child("raw-aiohttp", port, 2000, 64)  # warm the sink up
        for _ in range(args.rounds):
            for concurrency, count in ((64, args.count), (1, args.count // 4)):
                for kind in kinds:
                    got = measure_child(kind, port, count, concurrency)
                    results.setdefault((kind, concurrency), []).append(got)
    finally:
        sink.terminate()
        sink.wait()
    print(f"uvloop {'yes' if uvloop else 'no'}; medians of {args.rounds} interleaved rounds")
    print(f"{'client':<16} {'c':>3} {'req/s':>9} {'ratio':>6} {'CPU µs/req':>11} {'ratio':>6}")
    for concurrency in (64, 1):
        base = results[("raw-aiohttp", concurrency)]
        base_rate = statistics.median(r for r, _ in base)
        base_cpu = statistics.median(c for _, c in base)
        for kind in kinds:
            rows = results[(kind, concurrency)]
            rate = statistics.median(r for r, _ in rows)
            cpu = statistics.median(c for _, c in rows)
            print(
                f"{kind:<16} {concurrency:>3} {rate:>9,.0f} {rate / base_rate:>6.2f} "
                f"{cpu:>11.1f} {cpu / base_cpu:>6.2f}"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
