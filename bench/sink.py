"""A loopback webhook receiver for the benchmarks: answers every request with JSON.

    python bench/sink.py [--port 0] [--delay SECONDS]

Prints ``port <n>`` on stdout once it listens, then serves until killed. ``GET /stats``
returns how many requests it answered (not counted itself). uvloop is used when
installed, for both sides of every comparison alike.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

ANSWER = b'{"status":"shipped","order":{"id":"A-1001","eta":"Tuesday"}}'


class Sink:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.count = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(body=ANSWER, content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.count})


async def serve(port: int, delay: float) -> None:
    sink = Sink(delay)
    app = web.Application(client_max_size=4 << 20)
    app.router.add_get("/stats", sink.stats)
    app.router.add_route("*", "/{tail:.*}", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"port {bound}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(serve(args.port, args.delay))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
