"""``flowrunner test``: expectations, mocks, isolation, output formats and coverage.

The project's webhooks point at a canary: a real listener on 127.0.0.1 that counts
every connection made to it. Cases answer every call with mocks, so the canary must
count none, whatever the cases do.
"""

from __future__ import annotations

import json
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from click.testing import Result

from tests.conftest import invoke, write_project

FLOW = """\
flow: checkout
on_complete: true
keys: {tries: 0}
steps:
  - id: start
    operation: assign
    set:
      tries: "{{ $flow.key.tries + 1 }}"
      $user.key.visits: "{{ $user.key.visits + 1 }}"
  - id: lookup
    webhook: api
    method: getOrder
    params: {hint: "{{ $call.cli[-2:] }}"}
    on_failure: sorry
  - id: vip
    when: "{{ $flow.key.tier == 'gold' }}"
    operation: assign
    set: {message: Welcome back.}
    next: end
  - id: normal
    operation: assign
    set: {message: "Order $flow.key.order_id"}
    next: end
  - id: sorry
    operation: assign
    set: {message: sorry}
"""

GOLD = "json: {tier: gold, order: {id: A-1}}"


class Canary:
    """A TCP listener that counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture
def project(tmp_path: Path, canary: Canary, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # file names print relative to the working directory
    base = f"http://127.0.0.1:{canary.port}"
    hooks = {
        "api": {
            "url": f"{base}/api",
            "body": "json",
            "auth": {"bearer": {"token": {"secret": "API_TOKEN"}}},
            "methods": {
                "getOrder": {"response": {"tier": "tier", "order_id": "order.id"}},
                "cancel": {},
            },
        },
        "events": {"url": f"{base}/events", "default": True},
    }
    return write_project(tmp_path, hooks, {"checkout": FLOW}, user_keys={"visits": 0})


def write_cases(root: Path, cases: str, head: str = "flow: checkout\n") -> Path:
    path = root / "tests" / "checkout.test.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(head + "cases:\n" + textwrap.indent(textwrap.dedent(cases), "  "))
    return path


def case(expect: str, mocks: str = f"api.getOrder: {{{GOLD}}}", call: str = "{cli: '+15550001'}"):
    return f"""\
- name: the case
  call: {call}
  mocks: {{{mocks}}}
  expect:
{textwrap.indent(textwrap.dedent(expect), "    ")}"""


def run_test(root: Path, *args: str) -> Result:
    result = invoke(root, "test", *args)
    assert "Traceback" not in result.output
    return result


# every expect member: a value that matches, and one that does not with its message
EXPECT = {
    "status": (
        "status: COMPLETED",
        "status: FAILED",
        "expect.status: expected 'FAILED', got 'COMPLETED'",
    ),
    "error": (
        "error: null",
        "error: {step: lookup}",
        'expect.error: expected {"step": "lookup"}, got null',
    ),
    "steps": (
        "steps: [start, lookup, vip]",
        "steps: [start, lookup, normal]",
        "expect.steps[2]: expected 'normal', got 'vip'",
    ),
    "keys": (
        "keys: {tries: 1, tier: gold, order_id: A-1, message: Welcome back.}",
        "keys: {order_id: A-2}",
        "expect.keys.order_id: expected 'A-2', got 'A-1'",
    ),
    "user_keys": (
        "user_keys: {visits: 1}",
        "user_keys: {visits: 5}",
        "expect.user_keys.visits: expected 5, got 1",
    ),
    "requests": (
        "requests: [{to: api.getOrder, method: POST,"
        " headers: {Authorization: Bearer test-API_TOKEN},"
        " body: {method: getOrder, params: {hint: '01'}}}]",
        "requests: [{to: api.getOrder, body: {params: {hint: '02'}}}]",
        "expect.requests[0].body.params.hint: expected '02', got '01'",
    ),
    "on_complete": (
        "on_complete: {flowStatus: COMPLETED, flow: checkout, cli: '+15550001'}",
        "on_complete: null",
        "expect.on_complete: expected null, got {",
    ),
}


@pytest.mark.parametrize("member", sorted(EXPECT))
def test_each_expect_member_passes_and_fails(project: Path, member: str, canary: Canary) -> None:
    good, bad, message = EXPECT[member]
    write_cases(project, case(good))
    result = run_test(project)
    assert result.exit_code == 0, result.output
    assert "1 passed, 0 failed" in result.output

    path = write_cases(project, case(bad))
    result = run_test(project)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "FAIL tests/checkout.test.yaml: the case" in result.output or "FAIL " in result.output
    assert f"{path.name}:1" not in result.output  # the case's line, not the file's first
    assert "case 'the case' failed" in result.output
    assert canary.connections == 0


def test_failure_names_file_line_and_expectation_line(project: Path) -> None:
    write_cases(project, case("keys: {order_id: A-2}"))
    result = run_test(project)
    # the case is on line 3 (flow, cases, then '- name'); its keys expectation on line 7
    assert "checkout.test.yaml:3: case 'the case' failed" in result.output
    assert "line 7: expect.keys.order_id" in result.output


def test_lists_must_have_the_same_length(project: Path) -> None:
    write_cases(project, case("steps: [start, lookup]"))
    result = run_test(project)
    assert result.exit_code == 1
    assert "(2 expected, 3 found)" in result.output


def test_a_failed_execution_fails_a_case_that_does_not_expect_it(project: Path) -> None:
    write_cases(project, case("steps: [start, lookup, sorry]", mocks="api.getOrder: {status: 500}"))
    assert run_test(project).exit_code == 0  # on_failure: the execution completes
    write_cases(project, case("keys: {}", mocks="api.getOrder: {status: 500}", call="{}"))
    result = run_test(project)
    assert result.exit_code == 1
    assert "expect.status: expected 'COMPLETED', got 'FAILED' (step 'lookup': TEMPLATE_ERROR" in (
        result.output
    )


MOCK_KINDS = {
    "json": (GOLD, "steps: [start, lookup, vip]"),
    "status": ("status: 404", "keys: {error_reason: CLIENT_ERROR, response_status_code: 404}"),
    "body and headers": (
        "body: plain text, headers: {X-Reply: 'yes'}",
        "keys: {response_raw: plain text, tier: null, response_status: SUCCESS}",
    ),
    "timeout": ("error: timeout", "keys: {error_reason: TIMEOUT, response_status_type: Timeout}"),
    "connection": (
        "error: connection",
        "keys: {error_reason: CONNECTION_ERROR, response_status_code: null}",
    ),
}


@pytest.mark.parametrize("kind", sorted(MOCK_KINDS))
def test_each_mock_kind(project: Path, kind: str, canary: Canary) -> None:
    answer, expect = MOCK_KINDS[kind]
    write_cases(project, case(expect, mocks=f"api.getOrder: {{{answer}}}"))
    result = run_test(project)
    assert result.exit_code == 0, result.output
    assert canary.connections == 0


def test_a_list_of_answers_is_used_in_order_and_the_last_repeats(tmp_path: Path) -> None:
    flow = """\
    flow: twice
    steps:
      - {id: a, webhook: api, method: getOrder, on_failure: b, next: end}
      - {id: b, webhook: api, method: getOrder, on_failure: c, next: end}
      - {id: c, webhook: api, method: getOrder, on_failure: d, next: end}
      - {id: d, operation: assign, set: {done: true}}
    """
    hooks = {"api": {"url": "https://api.example.com/x", "methods": {"getOrder": {}}}}
    root = write_project(tmp_path, hooks, {"twice": flow})
    (root / "twice.test.yaml").write_text(
        textwrap.dedent("""\
        flow: twice
        cases:
          - name: answers in order
            mocks:
              api.getOrder: [{status: 500}, {status: 200}, {status: 503}]
            expect:
              steps: [a, b]
          - name: the last answer repeats
            mocks:
              api: [{status: 500}, {status: 503}]
            expect:
              steps: [a, b, c, d]
        """)
    )
    result = run_test(root)
    assert result.exit_code == 0, result.output
    assert "2 passed, 0 failed" in result.output


def test_a_webhook_mocked_alone_answers_every_method(project: Path) -> None:
    write_cases(project, case("steps: [start, lookup, vip]", mocks=f"api: {{{GOLD}}}"))
    assert run_test(project).exit_code == 0


def test_an_unmocked_call_fails_the_case_and_sends_nothing(project: Path, canary: Canary) -> None:
    write_cases(project, case("steps: [start, lookup, sorry]", mocks=""))
    result = run_test(project)
    assert result.exit_code == 1
    assert "no mock for api.getOrder" in result.output
    assert canary.connections == 0


def test_the_push_is_captured_not_sent(project: Path, canary: Canary) -> None:
    write_cases(project, case("on_complete: {flowStatus: COMPLETED, error: null, flow: checkout}"))
    result = run_test(project)
    assert result.exit_code == 0, result.output
    assert canary.connections == 0


def test_cases_are_independent(project: Path) -> None:
    write_cases(
        project,
        case("user_keys: {visits: 1}")
        + "\n"
        + case("user_keys: {visits: 1}").replace("the case", "again"),
    )
    result = run_test(project)
    assert result.exit_code == 0, result.output
    assert "2 passed, 0 failed" in result.output


def test_case_user_keys_seed_the_store(project: Path) -> None:
    cases = case("user_keys: {visits: 8}").replace("  call:", "  user_keys: {visits: 7}\n  call:")
    write_cases(project, cases)
    assert run_test(project).exit_code == 0


def test_never_reads_secrets_from_the_environment(project: Path) -> None:
    write_cases(project, case("requests: [{headers: {authorization: Bearer test-API_TOKEN}}]"))
    result = invoke(project, "test", env={"API_TOKEN": "from-the-env"})
    assert result.exit_code == 0, result.output
    head = "flow: checkout\nsecrets: {API_TOKEN: listed}\n"
    write_cases(project, case("requests: [{headers: {authorization: Bearer listed}}]"), head)
    assert run_test(project).exit_code == 0


def test_json_output(project: Path) -> None:
    write_cases(project, case("steps: [start]"))
    result = run_test(project, "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert len(data) == 1
    entry = data[0]
    assert entry["file"].endswith("checkout.test.yaml")
    assert (entry["case"], entry["line"], entry["status"]) == ("the case", 3, "failed")
    assert entry["failures"] and "expect.steps" in entry["failures"][0]


def test_junit_output_is_read_by_a_junit_reader(project: Path) -> None:
    write_cases(
        project,
        case("steps: [start, lookup, vip]")
        + "\n"
        + case("steps: [start]").replace("the case", "broken"),
    )
    result = run_test(project, "--format", "junit")
    assert result.exit_code == 1
    root = ET.fromstring(result.output)  # nothing but the XML on stdout
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    suites = root.findall("testsuite")
    assert len(suites) == 1
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == ["the case", "broken"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "expect.steps" in (failure.get("message") or "")

    junitparser = pytest.importorskip("junitparser")
    xml = junitparser.JUnitXml.fromstring(result.output)
    parsed = [(case.name, case.is_passed) for suite in xml for case in suite]
    assert parsed == [("the case", True), ("broken", False)]


def test_github_output_annotates_failures(project: Path) -> None:
    write_cases(project, case("steps: [start]"))
    result = run_test(project, "--format", "github")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("::error ")]
    assert len(lines) == 1
    assert lines[0].startswith(
        "::error file=tests/checkout.test.yaml,line=3,title=test%3A the case::"
    )


def test_coverage_of_a_flow_with_known_branches(project: Path) -> None:
    # one case: the gold path. Reached: start, lookup, vip (3 of 5 steps); branches:
    # lookup success, vip when true (2 of 4). Total 5 of 9 = 55.6%
    write_cases(project, case("steps: [start, lookup, vip]"))
    result = run_test(project, "--coverage")
    assert result.exit_code == 0
    assert "checkout                 steps 3/5  branches 2/4  55.6%" in result.output
    for missed in ("step normal", "step sorry", "branch lookup: failure", "branch vip: when false"):
        assert f"not reached: {missed}" in result.output
    result = run_test(project, "--min-coverage", "60")
    assert result.exit_code == 1
    assert "coverage 55.6% is under --min-coverage 60%" in result.output
    more = case("steps: [start, lookup, normal]", mocks="api.getOrder: {json: {tier: silver}}")
    failing = case("steps: [start, lookup, sorry]", mocks="api.getOrder: {error: timeout}")
    write_cases(
        project,
        "\n".join(
            [
                case("steps: [start, lookup, vip]"),
                more.replace("the case", "b"),
                failing.replace("the case", "c"),
            ]
        ),
    )
    result = run_test(project, "--min-coverage", "100")
    assert result.exit_code == 0, result.output
    assert "steps 5/5  branches 4/4  100.0%" in result.output


def test_coverage_with_json_keeps_stdout_for_the_document(project: Path) -> None:
    write_cases(project, case("steps: [start, lookup, vip]"))
    result = invoke(project, "test", "--format", "json", "--coverage")
    assert json.loads(result.stdout)[0]["status"] == "passed"
    assert "coverage:" in result.stderr


def test_an_invalid_test_file_exits_2_with_diagnostics(project: Path) -> None:
    path = write_cases(project, case("steps: [start, nowhere]", mocks="api.getOrdr: {status: 200}"))
    result = run_test(project)
    assert result.exit_code == 2
    assert (
        "tests/checkout.test.yaml:5:13: error: webhook 'api' has no method 'getOrdr'"
        in result.output
    )
    assert "the flow has no step 'nowhere' (steps: lookup, normal, sorry, start, vip)" in (
        result.output
    )
    assert "has no method 'getOrdr' (did you mean 'getOrder'?) [test-mock]" in result.output
    validated = invoke(project, "validate")
    assert validated.exit_code == 1
    assert "[test-mock]" in validated.output and "[test-step]" in validated.output
    assert invoke(project, "validate", str(path)).exit_code == 1


def test_an_unknown_flow_is_a_test_file_error(project: Path) -> None:
    write_cases(project, case("steps: []"), head="flow: nope\n")
    result = run_test(project)
    assert result.exit_code == 2
    assert "no flow 'nope' in the project [test-flow]" in result.output


@pytest.mark.parametrize(
    "text",
    [
        "flow: checkout\ncases: [",
        "a: &x 1\nb: *x\n",
        "flow: checkout\ncases: []\n",
        "- 1\n",
        "\x00",
    ],
)
def test_hostile_test_files_are_one_line_exit_2(project: Path, text: str) -> None:
    (project / "bad.test.yaml").write_text(text)
    result = run_test(project, "bad.test.yaml")
    assert result.exit_code == 2
    assert result.output.count("bad.test.yaml:") >= 1


def test_flow_discovery_skips_test_files(project: Path) -> None:
    (project / "flows" / "checkout.test.yaml").write_text(
        "flow: checkout\ncases:\n" + textwrap.indent(case("steps: [start, lookup, vip]"), "  ")
    )
    result = invoke(project, "validate")
    assert result.exit_code == 0, result.output
    assert run_test(project).exit_code == 0


def test_no_test_files_is_a_usage_error(project: Path) -> None:
    result = run_test(project)
    assert result.exit_code == 2
    assert "no *.test.yaml files found" in result.output


def test_schema_test_prints_the_schema() -> None:
    from click.testing import CliRunner

    from flowrunner.cli.main import main

    result = CliRunner().invoke(main, ["schema", "test"])
    assert json.loads(result.output)["title"] == "flowrunner flow test"


def test_a_flow_without_tests_counts_in_the_project_coverage(project: Path) -> None:
    (project / "flows" / "untested.yaml").write_text(
        "flow: untested\nsteps:\n  - {id: only, operation: assign, set: {a: 1}}\n"
    )
    write_cases(project, case("steps: [start, lookup, vip]"))
    result = run_test(project, "--coverage")
    assert "untested                 steps 0/1  branches 0/0  0.0%" in result.output
    assert "not reached: step only" in result.output
    # a path limits coverage to the flows of the files given
    given = run_test(project, "--coverage", "tests/checkout.test.yaml")
    assert "untested" not in given.output


def test_discovery_skips_hidden_vendored_and_other_projects(project: Path) -> None:
    from flowrunner.testing.suite import test_files

    good = write_cases(project, case("steps: [start, lookup, vip]"))
    for folder in (".hidden", "node_modules/pkg", "venv/lib", "sub-project/flows"):
        (project / folder).mkdir(parents=True)
        (project / folder / "x.test.yaml").write_text("not: a test file\n")
    (project / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (project / "sub-project" / "flowrunner.yaml").write_text("version: 1\n")
    assert list(test_files(project)) == [good]
    assert run_test(project).exit_code == 0
