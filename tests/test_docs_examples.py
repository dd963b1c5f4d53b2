"""The examples of docs/flow-language.md, validated and run.

The page marks its examples with HTML comments before fenced blocks:

* ``<!-- example: project -->`` the project file; ``<!-- example: NAME -->`` a flow
  (``NAME`` is its file stem and ``flow:`` name). Every one must validate cleanly
  against the project exactly as written.
* ``<!-- answer: NAME -->`` JSON that every webhook answers while NAME runs.
* ``<!-- result: NAME ARGS -->`` the ``status`` and ``keys`` that running NAME with the
  ``run`` options ARGS gives (every key, or with webhook steps the keys shown).
* ``<!-- wire: NAME ARGS -->`` the request NAME's webhook step sends: the request line,
  headers that must be present (``<...>`` matches anything), and the body.
* ``<!-- invalid: NAME -->`` a flow, then the exact ``validate`` output for it.

To run them, the project is pointed at a local receiver (plain http, a loopback
allowlist, the webhook paths kept) and every secret is ``s3cret``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from conftest import LOOPBACK_HTTP, Receiver, Seen, execute, invoke, plan_of

from flowrunner import __version__
from flowrunner.cli.inputs import parse_assignments

DOC = Path(__file__).resolve().parent.parent / "docs" / "flow-language.md"
TAG = re.compile(r"<!-- (\w+): (\S+)([^>]*?) -->\n```(\w*)\n(.*?)\n```\n", re.S)
FOLLOWING_TEXT = re.compile(r"\s*```text\n(.*?)\n```\n", re.S)
SECRET = "s3cret"
FLAGS = {"--call": "call", "--key": "keys", "--user-key": "user_keys"}


@dataclass(frozen=True)
class Tag:
    kind: str
    name: str
    args: str
    body: str
    expected: str = ""  # the text block after an `invalid` example


def tags() -> list[Tag]:
    text = DOC.read_text(encoding="utf-8")
    found = []
    for match in TAG.finditer(text):
        kind, name, args, _lang, body = match.groups()
        expected = ""
        if kind == "invalid":
            after = FOLLOWING_TEXT.match(text, match.end())
            assert after is not None, f"invalid example {name} needs a text block after it"
            expected = after.group(1)
        found.append(Tag(kind, name, args.strip(), body, expected))
    return found


TAGS = tags()
PROJECT = next(t.body for t in TAGS if t.kind == "example" and t.name == "project")
FLOWS = {t.name: t.body for t in TAGS if t.kind == "example" and t.name != "project"}
ANSWERS = {t.name: json.loads(t.body) for t in TAGS if t.kind == "answer"}


def of_kind(kind: str) -> list[Tag]:
    return [t for t in TAGS if t.kind == kind]


def write(root: Path, project: dict[str, Any], flows: dict[str, str]) -> Path:
    (root / "flowrunner.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    (root / "flows").mkdir(exist_ok=True)
    for name, text in flows.items():
        (root / "flows" / f"{name}.yaml").write_text(text + "\n")
    return root


def local_project(receiver: Receiver) -> dict[str, Any]:
    """The page's project pointed at ``receiver``: same webhooks, same paths."""
    project = yaml.safe_load(PROJECT)
    project["http"] = dict(LOOPBACK_HTTP)
    project["state"] = "state.db"
    for hook in project["webhooks"].values():
        parts = urlsplit(hook["url"])
        hook["url"] = receiver.url + parts.path + (f"?{parts.query}" if parts.query else "")
    return project


def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in re.findall(r"\{secret: (\w+)\}", PROJECT):
        monkeypatch.setenv(name, SECRET)


def inputs(args: str) -> dict[str, Any]:
    words = shlex.split(args)
    assert len(words) % 2 == 0, args
    grouped: dict[str, list[str]] = {}
    for flag, value in zip(words[::2], words[1::2], strict=True):
        grouped.setdefault(flag, []).append(value)
    return {FLAGS[flag]: parse_assignments(flag, values) for flag, values in grouped.items()}


def test_the_page_has_examples_of_every_kind() -> None:
    assert {t.kind for t in TAGS} == {"example", "answer", "result", "wire", "invalid"}
    assert {t.name for t in of_kind("wire")} == {"wire-none", "wire-json", "wire-form"}
    for tag in of_kind("result") + of_kind("wire") + of_kind("answer"):
        assert tag.name in FLOWS, f"{tag.kind} {tag.name} has no example flow"
    for name, text in FLOWS.items():
        assert yaml.safe_load(text)["flow"] == name


def test_the_examples_validate_as_written(tmp_path: Path) -> None:
    write(tmp_path, yaml.safe_load(PROJECT), FLOWS)
    result = invoke(tmp_path, "validate")
    assert result.output == ""
    assert result.exit_code == 0


@pytest.mark.parametrize("tag", of_kind("invalid"), ids=lambda t: t.name)
def test_invalid_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: Tag) -> None:
    write(tmp_path, yaml.safe_load(PROJECT), {tag.name: tag.body})
    monkeypatch.chdir(tmp_path)
    result = invoke(tmp_path, "validate", f"flows/{tag.name}.yaml")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[:-1] == tag.expected.splitlines()


async def run_example(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, args: str
) -> Any:
    if name in ANSWERS:
        answer = ANSWERS[name]

        async def respond(_: web.Request) -> web.StreamResponse:
            return web.json_response(answer)

        receiver.fallback = respond
    secrets_env(monkeypatch)
    write(tmp_path, local_project(receiver), {name: FLOWS[name]})
    return await execute(plan_of(tmp_path, name), **inputs(args))


@pytest.mark.parametrize("tag", of_kind("result"), ids=lambda t: t.name)
async def test_results(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: Tag
) -> None:
    record = await run_example(receiver, tmp_path, monkeypatch, tag.name, tag.args)
    expected = json.loads(tag.body)
    assert record.status == expected["status"], record.error
    if "webhook:" in FLOWS[tag.name]:
        assert {k: record.keys.get(k, "<unset>") for k in expected["keys"]} == expected["keys"]
    else:
        assert record.keys == expected["keys"]
        assert list(record.keys) == list(expected["keys"])


def pattern(text: str) -> re.Pattern[str]:
    text = text.replace("<version>", __version__)
    parts = re.split(r"<[^<>]+>", text)
    return re.compile(".+".join(re.escape(p) for p in parts))


def check_request(seen: Seen, shown: str) -> None:
    head, _, body = shown.partition("\n\n")
    request_line, *header_lines = head.splitlines()
    method, target = request_line.split(" ", 1)
    assert seen.method == method
    wire_target = seen.path + (f"?{seen.query}" if seen.query else "")
    assert pattern(target).fullmatch(wire_target), wire_target
    for line in header_lines:
        name, value = line.split(": ", 1)
        assert name in seen.headers, f"no {name} header"
        assert pattern(value).fullmatch(seen.headers[name]), (name, seen.headers[name])
    if not body:
        assert seen.body == b""
    elif seen.content_type == "application/json":
        assert json.loads(seen.body) == json.loads(body)
    else:
        assert seen.body.decode() == body


@pytest.mark.parametrize("tag", of_kind("wire"), ids=lambda t: t.name)
async def test_wire_formats(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: Tag
) -> None:
    record = await run_example(receiver, tmp_path, monkeypatch, tag.name, tag.args)
    assert record.status == "COMPLETED", record.error
    [seen] = receiver.requests
    check_request(seen, tag.body)
    assert seen.headers["Idempotency-Key"].startswith(record.execution_id + ":")


README = DOC.parent.parent / "README.md"


def test_the_readme_flow_validates_against_the_example_project(tmp_path: Path) -> None:
    """The README's flow, placed in a copy of the example project, validates cleanly."""
    block = re.search(r"## What a flow looks like\n\n```yaml\n(.*?)\n```", README.read_text(), re.S)
    assert block is not None
    (tmp_path / "flowrunner.yaml").write_text((README.parent / "flowrunner.yaml").read_text())
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "readme.yaml").write_text(block.group(1) + "\n")
    result = invoke(tmp_path, "validate")
    assert (result.exit_code, result.output) == (0, "")
