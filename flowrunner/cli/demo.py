"""``flowrunner demo``: the example flows against an embedded local receiver.

The receiver listens on a free loopback port, answers the example project's webhook
methods with canned JSON, records every request and checks on-complete signatures.
The example project is rewritten to point at it (plain http and a loopback allowlist,
a temporary state file, demo secrets); nothing leaves the machine.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from flowrunner.cli.report import record_text
from flowrunner.errors import InvalidProject
from flowrunner.execution.context import Inputs
from flowrunner.net import signing
from flowrunner.plan.compiler import compile_flow, compile_project
from flowrunner.plan.types import Plan
from flowrunner.project import FLOWS_DIR, PROJECT_FILE, flow_files, load_project
from flowrunner.runner import Runner
from flowrunner.secrets import Secrets
from flowrunner.source import model as m
from flowrunner.source.loader import load_path
from flowrunner.source.to_model import build_flow

SECRETS = {
    "SHOP_API_TOKEN": "demo-shop-token",
    "CALENDAR_PASSWORD": "demo-calendar-password",
    "CRM_SIGNING_SECRET": "whsec_ZGVtby1jcm0tc2lnbmluZy1rZXk=",
    "EVENTS_SIGNING_SECRET": "whsec_ZGVtby1ldmVudHMtc2lnbmluZy1rZXk=",
}

ANSWERS: dict[str, dict[str, Any]] = {
    "getOrderStatus": {"status": "shipped", "order": {"id": "A-1001", "eta": "Tuesday"}},
    "nextAppointment": {"appointment": {"id": "apt-42", "starts_at": "2026-12-01T09:30:00+01:00"}},
    "confirmAppointment": {"ok": True},
    "createLead": {"lead": {"id": "L-7", "owner": {"name": "Dana"}}},
}

CALLS: dict[str, dict[str, Any]] = {
    "order-status": {
        "uuid": "c-1001",
        "cli": "+15551234567",
        "did": "+15550000001",
        "direction": "inbound",
        "start": "2026-11-28T10:00:00Z",
    },
    "appointment-reminder": {
        "uuid": "c-1002",
        "cli": "+15557654321",
        "digits": "1",
        "direction": "outbound",
        "dnis": "+15557654321",
    },
    "lead-capture": {
        "uuid": "c-1003",
        "cli": "+15559876543",
        "topics": "pricing,demo",
        "direction": "inbound",
        "hangup_cause": "NORMAL_CLEARING",
    },
}


def example_root() -> Path:
    """The example project: bundled in the wheel, or the source checkout's top level."""
    package = Path(__file__).resolve().parent.parent
    for root in (package / "example", package.parent):
        if (root / PROJECT_FILE).is_file():
            return root
    raise FileNotFoundError("the example project is not installed")


class Receiver:
    """An aiohttp app that answers webhook calls and records them."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.pushes: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        hook = request.match_info["hook"]
        if hook == "events":
            return self._push(request, body)
        method = request.query.get("method") or _method_of(body, request.content_type)
        self.requests.append(
            {
                "webhook": hook,
                "method": request.method,
                "path": request.path_qs,
                "content_type": request.content_type,
                "body": body.decode("utf-8", "replace"),
            }
        )
        return web.json_response(ANSWERS.get(method, {}))

    def _push(self, request: web.Request, body: bytes) -> web.Response:
        expected = signing.sign(
            SECRETS["EVENTS_SIGNING_SECRET"],
            request.headers.get("webhook-id", ""),
            int(request.headers.get("webhook-timestamp", "0")),
            body,
        )
        self.pushes.append(
            {
                "webhook_id": request.headers.get("webhook-id"),
                "signature_valid": request.headers.get("webhook-signature") == expected,
                "payload": json.loads(body),
            }
        )
        return web.json_response({"received": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{hook}", self.handle)
        return app


def _method_of(body: bytes, content_type: str) -> str:
    if content_type == "application/json":
        return str(json.loads(body).get("method", ""))
    from urllib.parse import parse_qs

    return parse_qs(body.decode()).get("method", [""])[0]


def demo_project(base: m.Project, port: int, state_dir: Path) -> m.Project:
    """``base`` pointed at the receiver: every webhook URL, the policy, the state file."""
    hooks = {
        name: dataclasses.replace(hook, url=f"http://127.0.0.1:{port}/{name}")
        for name, hook in base.webhooks.items()
    }
    return dataclasses.replace(
        base,
        webhooks=hooks,
        http=m.HttpPolicy(enabled=True, allow_http=True, allowlist=("127.0.0.1",)),
        state=state_dir / "state.db",
    )


def demo_plans(root: Path, port: int, state_dir: Path) -> list[Plan]:
    cproject, diags = load_project(root)
    if cproject is None or any(d.severity == "error" for d in diags):
        raise InvalidProject(diags)
    project = demo_project(cproject.project, port, state_dir)
    local, diags = compile_project(project)
    plans = []
    for path in flow_files(root / FLOWS_DIR):
        plan, more = compile_flow(build_flow(load_path(path, path.name)), local)
        diags += more
        plans.append(plan)
    if any(d.severity == "error" for d in diags):
        raise InvalidProject(diags)
    return plans


async def run_demo(echo: Any = click.echo, transport: str | None = None) -> int:
    """Run every example flow once against the receiver (over ``transport``, see
    :mod:`flowrunner.net.transport`); 0 when all are green."""
    receiver = Receiver()
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    green = 0
    plans: list[Plan] = []
    try:
        with tempfile.TemporaryDirectory(prefix="flowrunner-demo-") as tmp:
            echo(f"Embedded receiver on http://127.0.0.1:{port} (state in a temporary folder)")
            plans = demo_plans(example_root(), port, Path(tmp))
            for plan in plans:
                green += await _run_one(plan, receiver, echo, transport)
    finally:
        await runner.cleanup()
    echo(f"\n{green} of {len(plans)} flows completed with their push delivered.")
    return 0 if green == len(plans) else 1


async def _run_one(plan: Plan, receiver: Receiver, echo: Any, transport: str | None) -> int:
    name = plan.flow.name
    seen, pushed = len(receiver.requests), len(receiver.pushes)
    async with Runner(plan, Secrets(env={}, extra=SECRETS), transport=transport) as runner:
        record = await runner.run(Inputs(call=dict(CALLS.get(name, {}))))
    echo(f"\n== {name}")
    echo(record_text(record.as_dict()))
    echo("requests received:")
    for req in receiver.requests[seen:]:
        echo(f"  {req['method']} {req['path']}  {req['content_type'] or '-'}  {req['body']}")
    for push in receiver.pushes[pushed:]:
        valid = "valid" if push["signature_valid"] else "INVALID"
        echo(f"on-complete payload received (webhook-id {push['webhook_id']}, signature {valid}):")
        echo(json.dumps(push["payload"], indent=2))
    ok = record.status == "COMPLETED" and (
        record.on_complete is None or record.on_complete["status"] == "delivered"
    )
    return 1 if ok else 0
