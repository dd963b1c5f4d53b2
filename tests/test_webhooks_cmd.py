"""``flowrunner webhooks list`` and ``webhooks check NAME`` against real servers."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Receiver, free_port, invoke, invoke_async, write_project

from flowrunner import __version__

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports


def hooks(receiver_url: str) -> dict[str, Any]:
    return {
        "shop": {
            "url": f"{receiver_url}/shop",
            "method": "GET",
            "auth": {"basic": {"username": "flow", "password": {"secret": "SHOP_PASSWORD"}}},
            "timeout": 5,
            "methods": {
                "getOrderStatus": {
                    "description": "Latest order of a caller.",
                    "response": {"order_status": "status", "order_id": "order.id"},
                },
                "ping": {},
            },
        },
        "sink": {
            "url": f"{receiver_url}/sink",
            "body": "json",
            "default": True,
            "auth": {"bearer": {"token": {"secret": "SINK_TOKEN"}}},
            "signing_secret": {"secret": "SINK_KEY"},
        },
    }


ENV = {"SHOP_PASSWORD": "pw", "SINK_TOKEN": "tok", "SINK_KEY": "whsec_a2V5"}


def test_list(tmp_path: Path) -> None:
    write_project(tmp_path, hooks("http://127.0.0.1:8080"))
    result = invoke(tmp_path, "webhooks", "list")
    assert result.exit_code == 0
    assert result.stdout == (
        "shop\n"
        "  GET http://127.0.0.1:8080/shop  body: none  timeout: 5s\n"
        "  auth: basic (flow, password from $SHOP_PASSWORD)\n"
        "  - getOrderStatus: Latest order of a caller.\n"
        "      maps order_status <- status, order_id <- order.id\n"
        "  - ping:\n"
        "sink  [default: receives on-complete pushes]\n"
        "  POST http://127.0.0.1:8080/sink  body: json  timeout: 10s\n"
        "  auth: bearer (token from $SINK_TOKEN)\n"
        "  signed with $SINK_KEY\n"
    )


def test_list_without_webhooks(tmp_path: Path) -> None:
    write_project(tmp_path, {})
    assert invoke(tmp_path, "webhooks", "list").stdout == "no webhooks in this project\n"


async def test_check_ok_sends_the_auth(receiver: Receiver, tmp_path: Path) -> None:
    write_project(tmp_path, hooks(receiver.url))
    result = await invoke_async(tmp_path, "webhooks", "check", "shop", env=ENV)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"✓ shop: reachable, auth accepted \(HTTP 200, \d+ ms\)\n", result.stdout)
    [seen] = receiver.requests
    assert seen.method == "GET" and seen.path == "/shop"
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"flow:pw").decode()
    assert seen.headers["User-Agent"] == f"flowrunner/{__version__}"


async def test_check_signs_for_a_signed_webhook(receiver: Receiver, tmp_path: Path) -> None:
    write_project(tmp_path, hooks(receiver.url))
    result = await invoke_async(tmp_path, "webhooks", "check", "sink", env=ENV)
    assert result.exit_code == 0
    headers = receiver.requests[0].headers
    assert headers["Authorization"] == "Bearer tok"
    assert headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (401, 1, "✗ shop: reachable, but the credentials were rejected (HTTP 401)"),
        (403, 1, "✗ shop: reachable, but the credentials were rejected (HTTP 403)"),
        (404, 1, "✗ shop: {url} answered HTTP 404 (is the URL right?)"),
        (302, 1, "✗ shop: answered with a redirect (HTTP 302); not followed"),
        (500, 1, "✗ shop: the server failed (HTTP 500)"),
        (405, 0, None),
    ],
)
async def test_check_verdicts(
    receiver: Receiver, tmp_path: Path, status: int, code: int, message: str | None
) -> None:
    receiver.status("/shop", status, **({"Location": "/x"} if status == 302 else {}))
    write_project(tmp_path, hooks(receiver.url))
    result = await invoke_async(tmp_path, "webhooks", "check", "shop", env=ENV)
    assert result.exit_code == code
    if message is None:
        assert re.fullmatch(
            r"✓ shop: reachable, auth accepted \(HTTP 405, \d+ ms\); "
            r"the empty check request itself was refused \(HTTP 405\)\n",
            result.stdout,
        )
    else:
        assert result.stdout == message.format(url=receiver.at("/shop")) + "\n"


async def test_check_a_closed_port(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    write_project(tmp_path, hooks(url))
    result = await invoke_async(tmp_path, "webhooks", "check", "shop", env=ENV)
    assert result.exit_code == 1
    assert result.stdout == f"✗ shop: {url}/shop not reachable: connection refused\n"


def test_check_an_unknown_name(tmp_path: Path) -> None:
    write_project(tmp_path, hooks("http://127.0.0.1:9"))
    result = invoke(tmp_path, "webhooks", "check", "shpo", env=ENV)
    assert result.exit_code == 2
    assert result.stderr == "flowrunner: no webhook named 'shpo' (did you mean 'shop'?)\n"


def test_check_with_a_missing_secret(tmp_path: Path) -> None:
    write_project(tmp_path, hooks("http://127.0.0.1:9"))
    result = invoke(tmp_path, "webhooks", "check", "shop", env={"SINK_TOKEN": "tok"})
    assert result.exit_code == 2
    assert "SHOP_PASSWORD" in result.stderr and "tok" not in result.output
