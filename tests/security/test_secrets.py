"""Secrets never leak: canary secrets for basic auth, bearer auth and signing are put in
the environment, every failure path is forced through the real command line, and the
secrets (and every base64 text that could carry them) are searched for in stdout,
stderr and every file the project folder holds afterwards (the SQLite database and its
journal included): zero hits."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from flowrunner import secrets
from flowrunner.oncomplete import payload as oncomplete

from .helpers import Project, Recorder, cli, write_project

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports

PASSWORD = "CANARY-s3cr3t-7f1e"
TOKEN = "CANARY-t0ken-4b2d9"
SIGNING = "CANARY-s1gn-9c3a8"
ENV = {"CANARY_PASSWORD": PASSWORD, "CANARY_TOKEN": TOKEN, "CANARY_SIGN": SIGNING}
USERNAME = "flowrunner"


def leak_forms(secret: str) -> set[bytes]:
    """The secret as bytes, and every base64 text that can carry it: whole, after
    ``user:``, and the fragments present at each of the three byte alignments."""
    raw = secret.encode()
    forms = {raw, base64.b64encode(raw), base64.b64encode(f"{USERNAME}:{secret}".encode())}
    for start in range(3):
        whole = raw[start:]
        whole = whole[: len(whole) - len(whole) % 3]
        forms.add(base64.b64encode(whole))
        forms.add(base64.urlsafe_b64encode(whole))
    return forms


FORMS = {form for secret in (PASSWORD, TOKEN, SIGNING) for form in leak_forms(secret)}


def leaks(results: list[Result], folder: Path) -> list[tuple[str, bytes]]:
    """Every (place, form) where a secret shows."""
    blobs = {}
    for i, result in enumerate(results):
        blobs[f"stdout #{i}"] = result.stdout.encode()
        blobs[f"stderr #{i}"] = result.stderr.encode()
    for path in folder.rglob("*"):
        if path.is_file():
            blobs[str(path.relative_to(folder))] = path.read_bytes()
    return [(place, form) for place, blob in blobs.items() for form in FORMS if form in blob]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leak_project(tmp_path: Path, url: str, events_url: str, **extra: Any) -> Project:
    basic = {"basic": {"username": USERNAME, "password": {"secret": "CANARY_PASSWORD"}}}
    bearer = {"bearer": {"token": {"secret": "CANARY_TOKEN"}}}
    signing = {"secret": "CANARY_SIGN"}
    hooks = {
        "basic": {"url": url, "auth": basic, "body": "json", **extra},
        "bearer": {"url": url, "auth": bearer, "signing_secret": signing, **extra},
        "events": {"url": events_url, "auth": basic, "signing_secret": signing, "default": True},
    }
    flows = {
        f"call-{name}": f"flow: call-{name}\non_complete: true\nsteps:\n"
        f"  - id: call\n    webhook: {name}\n    method: m\n"
        for name in ("basic", "bearer")
    }
    return write_project(tmp_path, hooks, flows, http={"allow_http": True,
                                                      "allowlist": ["127.0.0.1"]})  # fmt: skip


def state_commands(root: Path, execution_id: str | None) -> list[Result]:
    """Everything that reads the state store back."""
    results = [
        cli(root, "deliveries", "list", "--json", env=ENV),
        cli(root, "deliveries", "list", env=ENV),
        cli(root, "deliveries", "drain", "--now", "--timeout", "0", env=ENV),
        cli(root, "runs", "list", "--json", env=ENV),
    ]
    if execution_id:
        results.append(cli(root, "runs", "show", execution_id, env=ENV))
    return results


def run_both(root: Path, *extra: str) -> tuple[list[Result], str | None]:
    first = cli(root, "run", "call-basic", "--json", *extra, env=ENV)
    second = cli(root, "run", "call-bearer", *extra, env=ENV)
    for result in (first, second):
        assert "Traceback" not in result.stderr
    execution_id = json.loads(first.stdout)["execution_id"] if first.stdout.strip() else None
    return [first, second], execution_id


def failure_reason(result: Result) -> str | None:
    error = json.loads(result.stdout)["error"]
    return error and error["reason"]


Scenario = Callable[[Path, Recorder, Recorder], tuple[list[Result], str | None]]


def answered(code: int, reason: str | None) -> Scenario:
    def scenario(tmp_path: Path, server: Recorder, tls: Recorder) -> Any:
        project = leak_project(tmp_path, f"{server.url}/status/{code}", f"{server.url}/ok")
        results, execution_id = run_both(project.root)
        assert failure_reason(results[0]) == reason
        return results, execution_id

    return scenario


def failing(url: Callable[[Recorder, Recorder], str], reason: str) -> Scenario:
    def scenario(tmp_path: Path, server: Recorder, tls: Recorder) -> Any:
        project = leak_project(tmp_path, url(server, tls), f"{server.url}/ok")
        results, execution_id = run_both(project.root)
        assert [r.exit_code for r in results] == [1, 1]
        assert failure_reason(results[0]) == reason
        return results, execution_id

    return scenario


def template_error_in_a_header(tmp_path: Path, server: Recorder, tls: Recorder) -> Any:
    headers = {"X-Trace": "{{ $call.trace }}"}
    project = leak_project(tmp_path, f"{server.url}/ok", f"{server.url}/ok", headers=headers)
    results, execution_id = run_both(project.root)
    assert failure_reason(results[0]) == "TEMPLATE_ERROR"
    return results, execution_id


def missing_other_secret(tmp_path: Path, server: Recorder, tls: Recorder) -> Any:
    headers = {"X-Key": {"secret": "OTHER_MISSING"}}
    project = leak_project(tmp_path, f"{server.url}/ok", f"{server.url}/ok", headers=headers)
    result = cli(project.root, "run", "call-basic", env=ENV)
    debug = cli(project.root, "--debug", "run", "call-bearer", env=ENV)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "flowrunner: secret OTHER_MISSING is not set (set the environment variable "
        "OTHER_MISSING or pass --secrets-file)\n"
    )
    assert debug.exit_code == 2 and "Traceback" in debug.stderr
    return [result, debug], None


def invalid_flow(tmp_path: Path, server: Recorder, tls: Recorder) -> Any:
    project = leak_project(tmp_path, f"{server.url}/ok", f"{server.url}/ok")
    project.write(
        "flows/call-basic.yaml", "flow: call-basic\nsteps:\n  - id: x\n    webhook: nope\n"
    )
    result = cli(project.root, "run", "call-basic", env=ENV)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    return [result, cli(project.root, "validate", env=ENV)], None


def dry_run(tmp_path: Path, server: Recorder, tls: Recorder) -> Any:
    project = leak_project(tmp_path, f"{server.url}/ok", f"{server.url}/ok")
    results, _ = run_both(project.root, "--dry-run")
    assert "Authorization: Basic ***" in results[1].stdout or "Bearer ***" in results[1].stdout
    assert server.hits == []
    return results, None


def webhooks_commands(tmp_path: Path, server: Recorder, tls: Recorder) -> Any:
    project = leak_project(tmp_path, f"{server.url}/status/401", f"{server.url}/ok")
    results = [cli(project.root, "webhooks", "check", name, env=ENV) for name in
               ("basic", "bearer", "events")]  # fmt: skip
    results.append(cli(project.root, "webhooks", "list", env=ENV))
    assert [r.exit_code for r in results] == [1, 1, 0, 0]
    return results, None


def internal_error_with_debug(tmp_path: Path, server: Recorder, tls: Recorder) -> Any:
    """A bug whose exception message carries a secret: ``--debug`` shows the traceback,
    scrubbed."""
    project = leak_project(tmp_path, f"{server.url}/ok", f"{server.url}/ok")

    def leaky(*args: Any) -> Any:
        raise RuntimeError(f"cannot build payload with {os.environ['CANARY_PASSWORD']}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(oncomplete, "build_payload", leaky)
        debug = cli(project.root, "--debug", "run", "call-basic", env=ENV)
        plain = cli(project.root, "run", "call-basic", env=ENV)
    assert debug.exit_code == plain.exit_code == 3
    assert "RuntimeError: cannot build payload with ***" in debug.stderr
    assert plain.stderr.splitlines()[-1] == (
        "flowrunner: internal error: RuntimeError (run with --debug for details)"
    )
    return [debug, plain], None


SCENARIOS: dict[str, Scenario] = {
    "success": answered(200, None),
    "client-error": answered(401, "CLIENT_ERROR"),
    "server-error": answered(503, "SERVER_ERROR"),
    "timeout": failing(lambda s, t: f"{s.url}/slow", "TIMEOUT"),
    "connection-refused": failing(
        lambda s, t: f"http://127.0.0.1:{free_port()}/", "CONNECTION_ERROR"
    ),
    "refused-by-policy": failing(lambda s, t: "http://10.0.0.1/", "NOT_ALLOWED"),
    "tls-failure": failing(lambda s, t: f"{t.url}/ok", "CONNECTION_ERROR"),
    "template-error-in-header": template_error_in_a_header,
    "missing-other-secret": missing_other_secret,
    "invalid-flow": invalid_flow,
    "dry-run": dry_run,
    "webhooks-check-and-list": webhooks_commands,
    "internal-error-debug": internal_error_with_debug,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_no_secret_leaks(tmp_path, server, tls_server, name):
    results, execution_id = SCENARIOS[name](tmp_path, server, tls_server)
    if (tmp_path / ".flowrunner").exists():
        results += state_commands(tmp_path, execution_id)
    assert leaks(results, tmp_path) == []


def test_secrets_really_were_sent(tmp_path, server):
    """The searches above are not vacuous: the canaries did reach the receiver."""
    project = leak_project(tmp_path, f"{server.url}/ok", f"{server.url}/ok")
    results, _ = run_both(project.root)
    assert [r.exit_code for r in results] == [0, 0]
    sent = [hit["headers"].get("Authorization") for hit in server.hits]
    basic = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert sent.count(basic) == 3  # the basic step and two pushes
    assert sent.count(f"Bearer {TOKEN}") == 1
    assert all("webhook-signature" in hit["headers"] for hit in server.hits[1:])
    assert not [form for hit in server.hits for form in FORMS if form in hit["body"]]


# --- the scrubber -----------------------------------------------------------------------


@pytest.mark.parametrize("user", ["u", "us", "usr"])  # each byte alignment of the secret
def test_scrub_masks_basic_credentials(user):
    secrets.remember(PASSWORD)
    header = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    assert secrets.scrub(f"Authorization: {header}\n") == "Authorization: Basic ***\n"


@pytest.mark.parametrize(
    "text",
    [
        PASSWORD,
        json.dumps({"v": PASSWORD}),
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.urlsafe_b64encode(b"\xfb\xff" + PASSWORD.encode()).decode(),
    ],
)
def test_scrub_masks_encoded_forms(text):
    secrets.remember(PASSWORD)
    assert not any(form.decode() in secrets.scrub(text) for form in leak_forms(PASSWORD))
    assert "***" in secrets.scrub(text)


def test_scrub_masks_escaped_json():
    value = 'CANARY-"quoted"\\-ünï'
    secrets.remember(value)
    assert secrets.scrub(json.dumps({"v": value})) == '{"v": "***"}'
    assert secrets.scrub(json.dumps({"v": value}, ensure_ascii=False)) == '{"v": "***"}'


def test_short_values_are_not_masked():
    secrets.remember("abc")
    assert secrets.scrub("abc abcd") == "abc abcd"


def test_a_missing_secret_is_named_not_shown(tmp_path, server):
    project = leak_project(tmp_path, f"{server.url}/ok", f"{server.url}/ok")
    result = cli(project.root, "run", "call-bearer", env={"CANARY_TOKEN": TOKEN})
    assert (result.exit_code, result.stdout) == (2, "")
    assert re.fullmatch(r"flowrunner: secret CANARY_\w+ is not set \(.*\)\n", result.stderr)


def test_scrub_is_linear():
    """No backtracking: long base64-like output (a 1 MiB caller value) is scrubbed fast."""
    secrets.remember(PASSWORD)
    near_miss = base64.b64encode(PASSWORD.encode()).decode()[:-3]
    started = time.monotonic()
    for text in ("x" * (1 << 20), near_miss * 40_000):
        assert secrets.scrub(text) == text
    assert time.monotonic() - started < 1
