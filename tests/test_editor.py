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
        self.settings: dict[str, Any] = {}  # the "yaml" section the server pulls

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
                self.answer(message)
            elif "method" in message:
                self.notifications.append(message)
        raise AssertionError(f"no answer to {method}")

    def answer(self, message: dict[str, Any]) -> None:
        """Answer a request of the server: its settings (it pulls them on a change,
        section by section) or an empty result."""
        result: Any = None
        if message["method"] == "workspace/configuration":
            sections = [item.get("section") for item in message["params"]["items"]]
            result = [self.settings if s == "yaml" else {} for s in sections]
        self.send({"id": message["id"], "result": result})

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
    capabilities = {
        "textDocument": {"completion": {"completionItem": {"snippetSupport": True}}},
        "workspace": {"configuration": True},
    }
    lsp.request(
        "initialize",
        {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": capabilities},
    )
    lsp.notify("initialized", {})
    lsp.settings = {"validate": True, "completion": True, "hover": True, "schemas": {}}
    lsp.notify("workspace/didChangeConfiguration", {"settings": {}})
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


def diagnostics(lsp: Client, uri: str, settle: float = 3.0) -> list[dict[str, Any]]:
    """The last diagnostics published for ``uri`` once none came for ``settle`` seconds
    (a server may publish an empty list first, before its schema is loaded)."""
    deadline = time.monotonic() + 30
    last: list[dict[str, Any]] | None = None
    quiet_since = time.monotonic()
    seen = 0
    while time.monotonic() < deadline:
        lsp.request("textDocument/hover", {"textDocument": {"uri": uri},
                                           "position": {"line": 0, "character": 0}})  # fmt: skip
        fresh, seen = lsp.notifications[seen:], len(lsp.notifications)
        for note in fresh:
            if note["method"] == "textDocument/publishDiagnostics":
                if note["params"]["uri"] == uri:
                    last, quiet_since = note["params"]["diagnostics"], time.monotonic()
        if last is not None and time.monotonic() - quiet_since >= settle:
            return last
        time.sleep(0.2)
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


def test_init_settings_map_each_schema_to_its_files(tmp_path: Path) -> None:
    from flowrunner.cli.scaffold import write_repository

    write_repository(tmp_path)
    command = _server()
    assert command is not None
    lsp = Client(command)
    try:
        folders = [{"uri": tmp_path.as_uri(), "name": "repo"}]
        lsp.request(
            "initialize",
            {"processId": os.getpid(), "rootUri": tmp_path.as_uri(),
             "workspaceFolders": folders,
             "capabilities": {"workspace": {"configuration": True}}},
        )  # fmt: skip
        lsp.notify("initialized", {})
        settings = json.loads((tmp_path / ".vscode" / "settings.json").read_text())
        lsp.settings = {k.removeprefix("yaml."): v for k, v in settings.items() if k[:5] == "yaml."}
        lsp.notify("workspace/didChangeConfiguration", {"settings": {}})
        # no modelines: the settings alone choose the schema
        test_text = "flow: hello\ncases:\n  - name: a\n    bogus: 1\n"
        test_uri = open_doc(lsp, tmp_path / "flows", "other.test.yaml", test_text)
        flow_text = "flow: other\nsteps:\n  - id: a\n    operation: assign\n    set: {b: 1}\n"
        flow_uri = open_doc(lsp, tmp_path / "flows", "other.yaml", flow_text + "bogus: 1\n")
        test_messages = [d["message"] for d in diagnostics(lsp, test_uri)]
        flow_messages = [d["message"] for d in diagnostics(lsp, flow_uri)]
    finally:
        lsp.close()
    # each file is checked against its own schema only: one unknown key each
    assert len(test_messages) == 1 and "bogus" in test_messages[0], test_messages
    assert len(flow_messages) == 1 and "bogus" in flow_messages[0], flow_messages
