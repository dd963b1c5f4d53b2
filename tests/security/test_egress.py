"""SSRF: no flow, caller value, DNS answer, redirect or proxy setting makes flowrunner
reach an internal address. Every probe goes through the real command line; the
canary server on 127.0.0.1 must record nothing (checked after every test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import CALL_FLOW, cli, one_error_line, run_json, write_project

pytestmark = pytest.mark.usefixtures("transport")  # each test over both HTTP transports

# `host` is where a caller's value (or a flow author's URL) points the request: the
# webhook URL is `<scheme>://$call.host/hook`. {port} is the canary's port.
PROBES = {
    "loopback": "127.0.0.1:{port}",
    "loopback-other": "127.0.0.2:{port}",
    "localhost": "localhost:{port}",
    "localhost-mixed-case": "LocalHost:{port}",
    "decimal": "2130706433:{port}",
    "hex": "0x7f000001:{port}",
    "short": "127.1:{port}",
    "octal": "0177.0.0.1:{port}",
    "octal-int": "017700000001:{port}",
    "zero-padded": "127.000.000.001:{port}",
    "hex-dotted": "0x7f.1:{port}",
    "trailing-dot": "127.0.0.1.:{port}",
    "fullwidth-digits": "１２７.０.０.１:{port}",
    "ideographic-dots": "127。0。0。1:{port}",
    "enclosed-letters": "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{port}",
    "zero": "0:{port}",
    "unspecified": "0.0.0.0:{port}",
    "mapped-v6": "[::ffff:127.0.0.1]:{port}",
    "mapped-v6-hex": "[::ffff:7f00:1]:{port}",
    "mapped-v6-long": "[0:0:0:0:0:ffff:7f00:1]:{port}",
    "mapped-v6-zone": "[::ffff:127.0.0.1%25lo]:{port}",
    "compatible-v6": "[::127.0.0.1]:{port}",
    "nat64": "[64:ff9b::7f00:1]:{port}",
    "v6-loopback": "[::1]:{port}",
    "v6-unspecified": "[::]:{port}",
    "metadata": "169.254.169.254",
    "private": "10.0.0.1:{port}",
    "link-local-v6": "[fe80::1%25lo]:{port}",
    "credentials": "crm.example.com@127.0.0.1:{port}",
    "fragment-trick": "127.0.0.1:{port}#@crm.example.com",
    "dns-rebind": "rebind.example.net:{port}",
    "dns-v6-loopback": "v6.example.net:{port}",
    "dns-metadata": "metadata.example.net",
}


def probe_project(tmp_path: Path, scheme: str, allowlist: list[str] | None = None):
    http = {"allow_http": scheme == "http"}
    if allowlist is not None:
        http["allowlist"] = allowlist
    return write_project(
        tmp_path,
        {"probe": {"url": f"{scheme}://$call.host/hook"}},
        {"call": CALL_FLOW.format(hook="probe")},
        http=http,
    )


def assert_refused(code: int, record: dict, stderr: str) -> None:
    assert code == 1, stderr
    assert stderr == ""
    assert record["status"] == "FAILED"
    assert record["error"]["step"] == "call"
    assert record["error"]["reason"] == "NOT_ALLOWED"
    assert record["error"]["message"]  # the reason, e.g. "127.0.0.1 is a loopback address..."
    assert record["keys"]["response_status_type"] == "Refused"
    assert record["keys"]["response_status_code"] is None
    assert record["steps"][-1]["outcome"] == "failed"


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("name", list(PROBES))
def test_probe_is_refused(tmp_path, canary, fake_dns, name, scheme):
    project = probe_project(tmp_path, scheme)
    host = PROBES[name].format(port=canary.port)
    code, record, stderr = run_json(project.root, "call", "--call", f"host={host}")
    assert_refused(code, record, stderr)


def test_refusal_names_the_reason(tmp_path, canary):
    project = probe_project(tmp_path, "http")
    code, record, _ = run_json(project.root, "call", "--call", f"host=127.1:{canary.port}")
    assert code == 1
    assert record["error"]["message"] == (
        "127.1 is a non-canonical form of 127.0.0.1 (write IPv4 addresses as a dotted quad)"
    )
    code, record, _ = run_json(project.root, "call", "--call", f"host=localhost:{canary.port}")
    assert record["error"]["message"] == "127.0.0.1 is a loopback address (not on the allowlist)"


def test_allowlisted_name_resolving_to_loopback_is_refused(tmp_path, canary, fake_dns):
    """DNS cannot turn an allowed name into an internal destination."""
    project = probe_project(tmp_path, "http", allowlist=["crm.example.com"])
    code, record, stderr = run_json(
        project.root, "call", "--call", f"host=crm.example.com:{canary.port}"
    )
    assert_refused(code, record, stderr)
    assert record["error"]["message"] == (
        "crm.example.com is on the allowlist, but resolves to 127.0.0.1, a loopback "
        "address; allowlist 127.0.0.1 itself to allow it"
    )


def test_redirect_to_the_canary_is_not_followed(tmp_path, server, canary):
    target = f"http://127.0.0.1:{canary.port}/stolen"
    project = write_project(
        tmp_path,
        {"hop": {"url": f"{server.url}/redirect?to={target}", "body": "json"}},
        {"call": CALL_FLOW.format(hook="hop")},
    )
    code, record, stderr = run_json(project.root, "call")
    assert (code, stderr) == (1, "")
    assert record["error"]["reason"] == "REDIRECTION"
    assert record["keys"]["response_status_code"] == 302
    assert record["keys"]["response_status_type"] == "Redirection"
    assert len(server.hits) == 1


PROXY_VARIABLES = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"]


@pytest.mark.parametrize("variable", PROXY_VARIABLES)
def test_proxy_settings_are_ignored(tmp_path, server, canary, variable):
    project = write_project(
        tmp_path, {"hook": {"url": f"{server.url}/ok"}}, {"call": CALL_FLOW.format(hook="hook")}
    )
    env = {variable: f"http://127.0.0.1:{canary.port}", "NO_PROXY": ""}
    code, record, stderr = run_json(project.root, "call", env=env)
    assert (code, stderr, record["status"]) == (0, "", "COMPLETED")
    assert len(server.hits) == 1


def test_proxy_settings_are_ignored_by_a_real_process(tmp_path, server, canary):
    project = write_project(
        tmp_path, {"hook": {"url": f"{server.url}/ok"}}, {"call": CALL_FLOW.format(hook="hook")}
    )
    proxy = f"http://127.0.0.1:{canary.port}"
    env = {**os.environ, **{name: proxy for name in PROXY_VARIABLES}}
    done = subprocess.run(
        [sys.executable, "-m", "flowrunner", "--project", str(project.root), "run", "call",
         "--json", "--no-on-complete"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["status"] == "COMPLETED"
    assert len(server.hits) == 1


def test_http_disabled_sends_nothing(tmp_path, server):
    project = write_project(
        tmp_path,
        {"hook": {"url": f"{server.url}/ok"}},
        {"call": CALL_FLOW.format(hook="hook")},
        http={"enabled": False, "allow_http": True, "allowlist": ["127.0.0.1"]},
    )
    code, record, stderr = run_json(project.root, "call")
    assert (code, stderr) == (1, "")
    assert record["error"] == {
        "step": "call",
        "reason": "HTTP_DISABLED",
        "message": "HTTP is disabled (http.enabled: false)",
    }
    assert record["keys"]["response_status_type"] == "Refused"
    assert server.hits == []


def test_plain_http_is_refused_before_anything_runs(tmp_path, server):
    project = write_project(
        tmp_path,
        {"hook": {"url": f"{server.url}/ok"}},
        {"call": CALL_FLOW.format(hook="hook")},
        http={"allow_http": False, "allowlist": ["127.0.0.1"]},
    )
    result = cli(project.root, "run", "call")
    assert result.exit_code == 2
    assert result.stdout == ""
    first, summary = result.stderr.splitlines()
    assert first == (
        "flowrunner.yaml:11:10: error: webhook 'hook': URL scheme 'http' is not allowed; "
        "use https (set http.allow_http: true to allow plain http) [url-scheme]"
    ).replace("flowrunner.yaml", str(project.root / "flowrunner.yaml"))
    assert summary == "1 error(s), 0 warning(s)"
    assert server.hits == []


def test_on_complete_push_to_loopback_is_refused(tmp_path, canary):
    project = write_project(
        tmp_path,
        {"events": {"url": f"http://localhost:{canary.port}/push", "default": True}},
        {"done": "flow: done\non_complete: true\nsteps:\n  - id: a\n    operation: assign\n"
                 "    set: {x: 1}\n"},
        http={"allow_http": True},
        delivery={"retry_schedule": [60, 60]},
    )  # fmt: skip
    result = cli(project.root, "run", "done", "--json")
    assert result.exit_code == 75
    assert json.loads(result.stdout)["on_complete"]["status"] == "pending"
    assert "Traceback" not in result.stderr
    listed = json.loads(cli(project.root, "deliveries", "list", "--json").stdout)
    assert [row["last_error"] for row in listed] == [
        "refused by the egress policy: 127.0.0.1 is a loopback address (not on the allowlist)"
    ]
    drained = cli(project.root, "deliveries", "drain", "--now", "--timeout", "0")
    assert drained.exit_code == 75
    assert drained.stdout == "delivered 0, failed attempts 1, dead 0, still pending 1\n"


def test_webhooks_check_refuses_loopback(tmp_path, canary):
    project = write_project(
        tmp_path, {"local": {"url": f"http://127.0.0.1:{canary.port}/"}}, http={"allow_http": True}
    )
    result = cli(project.root, "webhooks", "check", "local")
    assert result.exit_code == 1
    assert one_error_line(result.stdout) == (
        f"✗ local: http://127.0.0.1:{canary.port}/ not reachable: "
        "127.0.0.1 is a loopback address (not on the allowlist)"
    )


def test_self_signed_certificate_fails(tmp_path, tls_server):
    project = write_project(
        tmp_path,
        {"tls": {"url": f"{tls_server.url}/ok"}},
        {"call": CALL_FLOW.format(hook="tls")},
        http={"allowlist": ["127.0.0.1"]},
    )
    code, record, stderr = run_json(project.root, "call")
    assert (code, stderr) == (1, "")
    assert record["error"]["reason"] == "CONNECTION_ERROR"
    assert record["error"]["message"].startswith("TLS certificate verify failed")
    assert record["keys"]["response_status_type"] == "ConnectionError"
    assert tls_server.hits == []


TLS_SWITCHES = ["verify", "verify_ssl", "ssl", "tls", "insecure", "ca", "ca_bundle", "cert",
                "skip_verify", "insecure_skip_verify", "tls_verify", "check_hostname"]  # fmt: skip


def property_names(node: object) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names.update(value)
            names |= property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= property_names(value)
    return names


@pytest.mark.parametrize("kind", ["flow", "project"])
def test_no_schema_key_turns_tls_verification_off(kind):
    schema = json.loads(cli(Path("."), "schema", kind).stdout)
    assert not property_names(schema) & set(TLS_SWITCHES)


def test_tls_switch_in_a_project_is_an_error(tmp_path):
    hook = {"url": "https://crm.example.com/", "verify": False}
    project = write_project(tmp_path, {"hook": hook})
    result = cli(project.root, "validate")
    assert result.exit_code == 1
    first, summary = result.stdout.splitlines()
    assert first == (
        f"{project.root}/flowrunner.yaml:12:5: error: unknown key 'verify' in webhook 'hook' "
        "(expected one of: auth, body, default, headers, method, methods, retry, "
        "signing_secret, timeout, url) [schema]"
    )
    assert summary == "1 error(s), 0 warning(s)"
