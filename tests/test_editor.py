"""The editor agrees with the CLI: yaml-language-server, driven over stdio as a real
LSP client, completes every step key from ``schemas/flow.schema.json``, shows the
schema's own messages and reads ``off`` as a string (YAML 1.2), as ``validate`` does.

Needs Node.js and npm's ``yaml-language-server``: set ``FLOWRUNNER_YLS`` to its
executable, or have it on PATH. ``bench/editor_check.py`` installs it into a temporary
folder with npm and runs these tests. Skipped, saying why, where it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCHEMA = (REPO / "schemas" / "flow.schema.json").as_uri()
STEP_KEYS = {
    "id", "description", "when", "next", "operation", "set",
    "webhook", "method", "parameters", "params", "document", "on_failure",
}  # fmt: skip


def _server() -> str | None:
    found = os.environ.get("FLOWRUNNER_YLS") or shutil.which("yaml-language-server")
    return found if found and shutil.which("node") else None


pytestmark = pytest.mark.skipif(
    _server() is None,
    reason="yaml-language-server (npm) or node is not installed; bench/editor_check.py runs it",
)


class Client:
    """A minimal LSP client over the server's stdin and stdout."""

    def __init__(self, command: str) -> None:
        self.proc = subprocess.Popen(
            [command, "--stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.next_id = 0
        self.notifications: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        length = 0
        while (line := self.proc.stdout.readline().strip()) != b"":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        assert length, "the server closed the connection"
        message: dict[str, Any] = json.loads(self.proc.stdout.read(length))
        return message

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        for _ in range(10_000):
            message = self.read()
            if message.get("id") == self.next_id and "method" not in message:
                return message.get("result")
            if "method" in message and "id" in message:  # a request of the server
                self.send({"id": message["id"], "result": [{}] * 8})
            elif "method" in message:
                self.notifications.append(message)
        raise AssertionError(f"no answer to {method}")

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def client(tmp_path: Path) -> Any:
    command = _server()
    assert command is not None
    lsp = Client(command)
    capabilities = {"textDocument": {"completion": {"completionItem": {"snippetSupport": True}}}}
    lsp.request(
        "initialize",
        {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": capabilities},
    )
    lsp.notify("initialized", {})
    settings = {"yaml": {"validate": True, "completion": True, "hover": True, "schemas": {}}}
    lsp.notify("workspace/didChangeConfiguration", {"settings": settings})
    yield lsp
    lsp.close()


def open_doc(lsp: Client, folder: Path, name: str, text: str) -> str:
    uri = (folder / name).as_uri()
    doc = {"uri": uri, "languageId": "yaml", "version": 1, "text": text}
    lsp.notify("textDocument/didOpen", {"textDocument": doc})
    return uri


def labels(lsp: Client, uri: str, line: int, character: int) -> set[str]:
    result = lsp.request(
        "textDocument/completion",
        {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}},
    )
    items = result["items"] if isinstance(result, dict) else result or []
    return {item["label"] for item in items}


def diagnostics(lsp: Client, uri: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for note in lsp.notifications:
            if note["method"] == "textDocument/publishDiagnostics":
                if note["params"]["uri"] == uri:
                    found: list[dict[str, Any]] = note["params"]["diagnostics"]
                    return found
        lsp.request("textDocument/hover", {"textDocument": {"uri": uri},
                                           "position": {"line": 0, "character": 0}})  # fmt: skip
    raise AssertionError("no diagnostics published")


HEAD = f"# yaml-language-server: $schema={SCHEMA}\nflow: fresh-flow\nsteps:\n"


def test_a_new_step_is_offered_every_step_key(client: Client, tmp_path: Path) -> None:
    uri = open_doc(client, tmp_path, "a.yaml", HEAD + "  - id: fresh\n    \n")
    offered = labels(client, uri, 4, 4)
    assert STEP_KEYS - {"id"} <= offered, sorted(offered)


def test_a_blank_list_item_is_offered_every_step_key(client: Client, tmp_path: Path) -> None:
    uri = open_doc(client, tmp_path, "b.yaml", HEAD + "  - \n")
    offered = labels(client, uri, 3, 4)
    assert STEP_KEYS <= offered, sorted(offered)


def test_the_editor_shows_our_messages_and_reads_off_as_a_string(
    client: Client, tmp_path: Path
) -> None:
    text = (
        f"# yaml-language-server: $schema={SCHEMA}\nflow: Bad Name\nsteps:\n"
        "  - id: off\n    operation: assign\n    set: {a: 1}\n"
    )
    uri = open_doc(client, tmp_path, "c.yaml", text)
    messages = [d["message"] for d in diagnostics(client, uri)]
    assert any("must be a flow name" in m for m in messages), messages
    # 'off' is a string (YAML 1.2): no type error on the step id, as in `flowrunner validate`
    assert not any("boolean" in m.lower() for m in messages), messages
