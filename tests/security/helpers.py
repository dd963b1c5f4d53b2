"""Helpers of the hostile-input suite: a threaded recording server, a project
written into a folder, and the real command line invoked in-process."""

from __future__ import annotations

import asyncio
import json
import ssl
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from click.testing import CliRunner, Result

from flowrunner.cli.main import main

LOOPBACK = "127.0.0.1"


class Recorder:
    """An aiohttp server in a thread of its own that records every request."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.hits: list[dict[str, Any]] = []
        self.port = 0
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    def start(self) -> Recorder:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        return self

    def stop(self) -> None:
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, LOOPBACK, 0, ssl_context=self._ssl)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.rel_url.raw_query_string,
                "raw_path": request.raw_path,
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        parts = request.path.strip("/").split("/")
        if parts[0] == "status":
            after = request.query.get("retry_after")
            headers = None if after is None else {"Retry-After": after}
            return web.Response(status=int(parts[1]), text=f"answer {parts[1]}", headers=headers)
        if parts[0] == "redirect":
            return web.Response(status=302, headers={"Location": request.query["to"]})
        if parts[0] == "deep":  # JSON nested a hundred thousand levels
            return web.Response(text="[" * 100_000 + "]" * 100_000, content_type="application/json")
        if parts[0] == "raw":
            return web.Response(text=request.query["body"], content_type="application/json")
        if parts[0] == "slow":
            await asyncio.sleep(3)
        if parts[0] == "echo":  # a debug endpoint: the request headers back, any status
            status = int(parts[1]) if len(parts) > 1 else 200
            return web.json_response({"headers": dict(request.headers)}, status=status)
        return web.json_response({"status": "ok"})


class _NoAliases(yaml.SafeDumper):
    """Shared values written out again: flowrunner files refuse anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclass
class Project:
    root: Path

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path


def write_project(
    root: Path,
    webhooks: dict[str, Any],
    flows: dict[str, str] | None = None,
    http: dict[str, Any] | None = None,
    **extra: Any,
) -> Project:
    """``flowrunner.yaml`` with these webhooks (each gets ``timeout: 1`` and a method
    ``m`` unless given), and ``flows/<name>.yaml`` for each entry of ``flows``."""
    hooks = {name: {"timeout": 1, "methods": {"m": {}}, **hook} for name, hook in webhooks.items()}
    data: dict[str, Any] = {
        "version": 1,
        "http": http if http is not None else {"allow_http": True, "allowlist": [LOOPBACK]},
        "webhooks": hooks,
        "state": ".flowrunner/state.db",
        "delivery": {"retry_schedule": [60]},
        **extra,
    }
    project = Project(root)
    project.write("flowrunner.yaml", yaml.dump(data, Dumper=_NoAliases, sort_keys=False))
    for name, text in (flows or {}).items():
        project.write(f"flows/{name}.yaml", text)
    return project


CALL_FLOW = """\
    flow: call
    steps:
      - id: call
        webhook: {hook}
        method: m
"""


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """``flowrunner --project <root> args...`` in-process; exceptions are not caught
    for the test (a crash must show as a failure, not as an exit code)."""
    runner = CliRunner(env=env)
    result = runner.invoke(main, ["--project", str(root), *args], catch_exceptions=False)
    return result


def run_json(root: Path, flow: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """``run FLOW --json`` with ``--no-on-complete``: (exit code, record, stderr)."""
    result = cli(root, "run", flow, "--json", "--no-on-complete", *args, env=env)
    assert "Traceback" not in result.stderr
    record = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, record, result.stderr


def one_error_line(text: str) -> str:
    """The single line of ``text`` (asserting that there is exactly one)."""
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in text
    return lines[0]
