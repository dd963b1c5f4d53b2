"""Hostile command-line input and webhook answers: a clean line and exit 2 for what
cannot be used, a clean record for what can; never an internal error."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from .helpers import CALL_FLOW, cli, one_error_line, run_json, write_project

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports

ASSIGN = "flow: t\nsteps:\n  - id: t\n    operation: assign\n    set: {y: $call.cli}\n"


@pytest.fixture
def root(tmp_path):
    return write_project(tmp_path, {}, {"t": ASSIGN}).root


USAGE_ERRORS = {
    "bad-name": (["--call", "bad name=1"], "flowrunner: --call …: expected NAME=VALUE or "
                 "NAME:=JSON (NAME is letters, digits and _, not starting with a digit)"),
    "bad-json": (["--call", "x:={nope"], "flowrunner: --call x: not valid JSON after ':=' "
                 "(Expecting property name enclosed in double quotes)"),
}  # fmt: skip


@pytest.mark.parametrize("name", ["bad-name", "bad-json"])
def test_bad_assignment_is_a_usage_error(root, name):
    args, line = USAGE_ERRORS[name]
    result = cli(root, "run", "t", *args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert one_error_line(result.stderr) == line


def test_unknown_flow_is_a_usage_error(root):
    result = cli(root, "run", "x/../../no-such-flow.yaml")
    assert (result.exit_code, result.stdout) == (2, "")
    assert (
        one_error_line(result.stderr) == "flowrunner: x/../../no-such-flow.yaml: no such flow file"
    )


def test_secrets_file_line_is_named_not_shown(root, tmp_path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text("GOOD=1\nCANARY-s3cr3t-7f1e\n")
    result = cli(root, "run", "t", "--secrets-file", str(secrets))
    assert (result.exit_code, result.stdout) == (2, "")
    assert one_error_line(result.stderr) == f"flowrunner: {secrets}:2: expected NAME=value"


def test_large_caller_value_is_data(root):
    value = "{{ 7*7 }}" * 100_000
    code, record, _ = run_json(root, "t", "--call", f"cli={value}")
    assert code == 0
    assert record["keys"]["y"] == value


def test_deeply_nested_answer_is_not_a_crash(tmp_path, server):
    hook = {"url": f"{server.url}/deep", "method": "GET",
            "methods": {"m": {"response": {"v": "0"}}}}  # fmt: skip
    project = write_project(tmp_path, {"hook": hook}, {"call": CALL_FLOW.format(hook="hook")})
    code, record, _ = run_json(project.root, "call")
    assert code == 0
    assert record["keys"]["v"] is None


@pytest.mark.parametrize("arg", ["cli=a\udcffb", 'cli:="\\ud800"'])
def test_invalid_unicode_in_a_caller_value_is_a_usage_error(root, arg):
    result = cli(root, "run", "t", "--call", arg)
    assert (result.exit_code, result.stdout) == (2, "")
    assert one_error_line(result.stderr).startswith("flowrunner: --call cli: ")


def test_deeply_nested_caller_value_is_a_usage_error(root):
    result = cli(root, "run", "t", "--call", "x:=" + "[" * 5000 + "]" * 5000)
    assert (result.exit_code, result.stdout) == (2, "")
    assert one_error_line(result.stderr).startswith("flowrunner: --call x: ")


def test_answer_with_a_lone_surrogate_is_not_a_crash(tmp_path, server):
    body = json.dumps({"status": "\ud800"})
    hook = {"url": f"{server.url}/raw?body={quote(body)}", "body": "json",
            "methods": {"m": {"response": {"v": "status"}}}}  # fmt: skip
    flow = CALL_FLOW.format(hook="hook") + "      - id: again\n        webhook: hook\n"
    flow += "        method: m\n"
    project = write_project(tmp_path, {"hook": hook}, {"call": flow})
    result = cli(project.root, "run", "call", "--json", "--no-on-complete")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert [s["outcome"] for s in record["steps"]] == ["ok", "ok"]
    assert record["keys"]["v"] is None  # not usable JSON: the mapped key is null
