"""``init``, ``graph`` and ``run --record``, and the example project's own flow tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from flowrunner.cli.main import main
from tests.conftest import invoke, invoke_async, write_project

REPO = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_init_writes_a_repository_that_validates_and_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "repo"
    runner = CliRunner()
    result = runner.invoke(main, ["init", str(target)])
    assert result.exit_code == 0, result.output
    expected = {
        "flowrunner.yaml",
        "flows/hello.yaml",
        "flows/hello.test.yaml",
        ".pre-commit-config.yaml",
        ".github/workflows/flows.yml",
        ".vscode/settings.json",
        ".gitignore",
    }
    assert expected <= set(snapshot(target))
    monkeypatch.chdir(target)
    validated = runner.invoke(main, ["validate"])
    assert (validated.exit_code, validated.output) == (0, "")
    tested = runner.invoke(main, ["test", "--min-coverage", "100"])
    assert tested.exit_code == 0, tested.output
    assert "2 passed, 0 failed" in tested.output

    before = snapshot(target)
    again = runner.invoke(main, ["init", str(target)])
    assert again.exit_code == 2
    assert "not overwriting existing files (use --force)" in again.output
    assert "flowrunner.yaml" in again.output
    assert snapshot(target) == before  # not one byte, not one mtime changed


def test_init_refuses_when_any_file_exists_and_force_overwrites(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "hello.yaml").write_text("mine\n")
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 2
    assert "hello.yaml" in result.output
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["hello.yaml"]
    assert (tmp_path / "flows" / "hello.yaml").read_text() == "mine\n"
    forced = CliRunner().invoke(main, ["init", str(tmp_path), "--force"])
    assert forced.exit_code == 0
    assert (tmp_path / "flows" / "hello.yaml").read_text().startswith("# yaml-language-server")


def test_init_pre_commit_config_uses_hooks_that_exist() -> None:
    import yaml

    from flowrunner.cli.scaffold import PRE_COMMIT

    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    ids = {h["id"] for h in hooks}
    config = yaml.safe_load(PRE_COMMIT)
    assert {h["id"] for h in config["repos"][0]["hooks"]} == {
        "flowrunner-validate",
        "flowrunner-test",
    }
    assert ids == {"flowrunner-validate", "flowrunner-test"}


EXAMPLE_STEPS = {
    "order-status": ["count-call", "lookup", "shipped", "not-yet", "sorry"],
    "appointment-reminder": [
        "read-input",
        "find",
        "no-appointment",
        "confirm",
        "not-confirmed",
        "retry",
        "check-retry",
        "give-up",
        "done",
    ],  # fmt: skip
}


@pytest.mark.parametrize("flow", sorted(EXAMPLE_STEPS))
@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_graph_has_every_step(flow: str, fmt: str) -> None:
    result = invoke(REPO, "graph", flow, "--format", fmt)
    assert result.exit_code == 0, result.output
    for step in EXAMPLE_STEPS[flow]:
        assert f"{step}\\n" in result.output or f'"{step}<br/>' in result.output
    assert "failure" in result.output and "when false" in result.output


def test_graph_edges_of_order_status() -> None:
    result = invoke(REPO, "graph", "order-status")
    lines = result.output.splitlines()
    assert lines[0] == "flowchart TD"
    for edge in (
        "s0 --> s1",
        "s1 -. failure .-> s4",
        "s2 -- next --> end_",
        "s2 -- when false --> s3",
        "s4 --> end_",
    ):
        assert f"    {edge}" in lines


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
@pytest.mark.parametrize("flow", ["order-status", "appointment-reminder", "lead-capture"])
def test_dot_renders_the_graph(flow: str, tmp_path: Path) -> None:
    source = invoke(REPO, "graph", flow, "--format", "dot").output
    done = subprocess.run(
        ["dot", "-Tsvg"], input=source.encode(), capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    svg = done.stdout.decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for step in EXAMPLE_STEPS.get(flow, []):
        assert f">{step.replace('-', '&#45;')}</text>" in svg


def test_the_example_project_passes_its_tests_at_full_coverage() -> None:
    result = invoke(REPO, "test", "--min-coverage", "100")
    assert result.exit_code == 0, result.output
    assert "11 passed, 0 failed" in result.output


FLOW = """\
flow: order-status
on_complete: true
steps:
  - id: lookup
    webhook: shop
    method: getOrderStatus
    on_failure: sorry
  - id: shipped
    when: "{{ $flow.key.order_status == 'shipped' }}"
    operation: assign
    set: {message: "Order $flow.key.order_id has shipped."}
    next: end
  - id: sorry
    operation: assign
    set: {message: sorry}
"""

SECRET = "real-token-value-123"


async def test_record_then_replay_with_the_receiver_stopped(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    hits: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        # a receiver that echoes the caller's token must not leak it into the file
        token = request.headers.get("Authorization", "")
        return web.json_response({"status": "shipped", "order": {"id": "A-1"}, "seen": token})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    hooks = {
        "shop": {
            "url": f"{base}/shop",
            "body": "json",
            "auth": {"bearer": {"token": {"secret": "SHOP_TOKEN"}}},
            "methods": {
                "getOrderStatus": {"response": {"order_status": "status", "order_id": "order.id"}}
            },
        },
        "sink": {"url": f"{base}/sink", "default": True},
    }
    root = write_project(tmp_path, hooks, {"order-status": FLOW}, user_keys={"tier": "gold"})
    recorded = tmp_path / "recorded.test.yaml"
    env = {"SHOP_TOKEN": SECRET}
    args = ["run", "order-status", "--call", "cli=+15551234567", "--record", str(recorded)]
    first = await invoke_async(root, *args, env=env)
    assert first.exit_code == 0, first.output
    second = await invoke_async(root, *args, "--key", "x:=2", env=env)
    assert second.exit_code == 0, second.output
    assert hits.count("/shop") == 2 and hits.count("/sink") == 2
    text = recorded.read_text()
    assert SECRET not in text
    assert "response_duration" not in text
    assert "shop.getOrderStatus:" in text and "order_id: A-1" in text
    assert "cli: '+15551234567'" in text
    assert "user_keys:\n      tier: gold" in text

    await server.close()
    port = server.port
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    replay = await invoke_async(root, "test", str(recorded))
    assert replay.exit_code == 0, replay.output
    assert "2 passed, 0 failed" in replay.output
    assert hits.count("/shop") == 2


def test_record_refuses_dry_run_and_events(tmp_path: Path) -> None:
    root = write_project(tmp_path, {}, {})
    result = invoke(root, "run", "x", "--dry-run", "--record", str(tmp_path / "r.test.yaml"))
    assert result.exit_code == 2
    assert "--record records one real run" in result.output


def test_the_readme_test_example_passes(tmp_path: Path) -> None:
    import re

    text = (REPO / "README.md").read_text()
    block = re.search(r"## Testing a flow\n.*?```yaml\n(.*?)\n```", text, re.S)
    assert block is not None
    shutil.copy(REPO / "flowrunner.yaml", tmp_path / "flowrunner.yaml")
    shutil.copytree(
        REPO / "flows", tmp_path / "flows", ignore=shutil.ignore_patterns("*.test.yaml")
    )
    (tmp_path / "flows" / "readme.test.yaml").write_text(block.group(1) + "\n")
    result = invoke(tmp_path, "test")
    assert result.exit_code == 0, result.output
    assert "1 passed, 0 failed" in result.output


def test_record_appends_as_text_keeping_comments(tmp_path: Path) -> None:
    from flowrunner.errors import UsageError
    from flowrunner.testing.record import append_case

    path = tmp_path / "a.test.yaml"
    path.write_text("# kept\nflow: f\ncases:\n  - name: first  # also kept\n")
    case = {"name": "recorded now", "call": {"cli": "yes"}, "expect": {"status": "COMPLETED"}}
    append_case(path, "f", case)
    text = path.read_text()
    assert text.startswith("# kept\nflow: f\ncases:\n  - name: first  # also kept\n")
    assert "  - name: recorded now (run 2)\n" in text
    assert "cli: 'yes'" in text  # a YAML 1.1 boolean word is written quoted
    with pytest.raises(UsageError, match="not a test file of flow 'g'"):
        append_case(path, "g", case)
    other = tmp_path / "b.test.yaml"
    other.write_text("cases:\n  - name: x\nflow: f\n")
    with pytest.raises(UsageError, match="its 'cases' list must come last"):
        append_case(other, "f", case)
    assert other.read_text() == "cases:\n  - name: x\nflow: f\n"  # left as it was


def test_record_into_a_file_that_cannot_take_it_runs_nothing(tmp_path: Path) -> None:
    response = {"order_status": "status", "order_id": "order.id"}
    hooks = {
        "shop": {
            "url": "https://shop.example.com/x",
            "methods": {"getOrderStatus": {"response": response}},
        }
    }
    root = write_project(tmp_path, hooks, {"order-status": FLOW.replace("on_complete: true\n", "")})
    target = tmp_path / "other.test.yaml"
    target.write_text("flow: another-flow\ncases:\n  - name: x\n")
    result = invoke(root, "run", "order-status", "--record", str(target))
    assert result.exit_code == 2
    assert "not a test file of flow 'order-status'" in result.output
    assert not (root / "state.db").exists()  # the run never started
    assert target.read_text() == "flow: another-flow\ncases:\n  - name: x\n"
