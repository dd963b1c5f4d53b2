"""Peak memory of a batch whose every answer is as large as the answer cap allows.

    .venv/bin/python bench/memory_large_answers.py [--events 300] [--concurrency 16 64]

A loopback receiver (a thread of this process) answers every request with 1,048,000
bytes of ``\\x01``: under the 1 MiB cap, and the worst case for JSON, which writes each
byte as ``\\u0001`` (6.3 MB per record). ``flowrunner run big --events FILE --output
/dev/null`` runs as a child process with on-complete pushes on (to the same receiver);
its peak RSS (``wait4`` rusage of that child alone) is printed per concurrency, beside
the peak RSS of the same batch with small answers (the baseline, measured in the same
run, interleaved). It is not a unit test: the figure depends on the machine's allocator.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from aiohttp import web

BIG = b"\x01" * 1_048_000
SMALL = b'{"status":"ok"}'


def serve() -> int:
    """Start the receiver in a daemon thread; its port."""
    ready = threading.Event()
    port: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        body = BIG if request.path.startswith("/big") else SMALL
        return web.Response(body=body, content_type="application/octet-stream")

    def run() -> None:
        loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port.append(runner.addresses[0][1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return port[0]


def project(root: Path, port: int) -> None:
    (root / "flows").mkdir(parents=True)
    (root / "flowrunner.yaml").write_text(
        textwrap.dedent(f"""\
        version: 1
        http: {{allow_http: true, allowlist: [127.0.0.1]}}
        webhooks:
          big: {{url: "http://127.0.0.1:{port}/big", methods: {{m: {{}}}}}}
          small: {{url: "http://127.0.0.1:{port}/small", methods: {{m: {{}}}}}}
          sink: {{url: "http://127.0.0.1:{port}/push", default: true}}
        state: .flowrunner/state.db
        """)
    )
    for name in ("big", "small"):
        (root / "flows" / f"{name}.yaml").write_text(
            f"flow: {name}\non_complete: true\nsteps:\n  - id: c\n    webhook: {name}\n"
            "    method: m\n"
        )


def peak_rss(root: Path, flow: str, events: Path, concurrency: int) -> tuple[int, float]:
    """(peak RSS in MiB, seconds) of one batch in a child process."""
    command = [sys.executable, "-m", "flowrunner", "--project", str(root), "run", flow,
               "--events", str(events), "--output", os.devnull,
               "--concurrency", str(concurrency)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 75):  # 75: a push left pending
        raise SystemExit(f"the batch failed: {err.decode()[-500:]}")
    return usage.ru_maxrss // 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    port = serve()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        project(root, port)
        events = root / "events.jsonl"
        events.write_text("{}\n" * args.events)
        print(f"{args.events} events, answers of {len(BIG):,} bytes of \\x01 vs small")
        for concurrency in args.concurrency:
            small, _ = peak_rss(root, "small", events, concurrency)
            big, seconds = peak_rss(root, "big", events, concurrency)
            print(
                f"concurrency {concurrency:3}: peak RSS {big:5} MiB with 1 MiB answers "
                f"({seconds:.1f} s), {small:4} MiB with small ones; ratio {big / small:.1f}"
            )


if __name__ == "__main__":
    main()
