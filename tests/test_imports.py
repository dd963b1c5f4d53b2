"""What each command imports: a command loads only the libraries it uses, so that
``--help`` and a pre-commit ``validate`` start fast (bench/cold_start.py measures it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from flowrunner.cli.main import LazyGroup, main

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "asyncio", "jinja2", "jsonschema", "sqlite3", "yaml", "flowrunner.state")

PROBE = """\
import io, json, sys, contextlib
from flowrunner.cli.main import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, [m for m in {heavy!r} if m in sys.modules]]))
"""


def loaded(*args: str) -> tuple[int, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    code, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    return code, heavy


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"]])
def test_help_and_version_load_no_heavy_library(args):
    assert loaded(*args) == (0, [])


def test_help_loads_nothing_of_flowrunner_but_the_command_line():
    # an option's choices (--transport, --format) are read at import: their modules
    # must not pull in the model, the secrets or the request types
    probe = PROBE.replace("{heavy!r}", "sorted(sys.modules)")
    out = subprocess.run(
        [sys.executable, "-c", probe, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    _, modules = json.loads(out.stdout.strip().splitlines()[-1])
    ours = [m for m in modules if m.startswith("flowrunner.")]
    assert all(m.startswith(("flowrunner.cli", "flowrunner.net")) for m in ours), ours
    assert "flowrunner.net.request" not in ours
    # the commands are listed from LazyGroup.lazy: none of their modules is compiled
    assert not {"flowrunner.cli.authoring", "flowrunner.cli.serve"} & set(ours), ours


def test_validate_of_a_sound_flow_loads_only_the_loader_and_the_templates():
    assert loaded("validate", "flows/order-status.yaml") == (0, ["jinja2", "yaml"])


def every_module(*args: str) -> list[str]:
    """Every module a command (with ``args``) has imported when it ends with exit 0."""
    probe = PROBE.replace("{heavy!r}", "sorted(sys.modules)")
    out = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True
    )
    code, modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert code == 0
    return list(modules)


def test_validate_reads_no_secret_and_loads_no_secrets_module():
    # output is scrubbed of resolved secrets; while flowrunner.secrets is not imported,
    # none can have been resolved
    assert "flowrunner.secrets" not in every_module("validate", "flows/order-status.yaml")


def test_the_scrubbed_stream_masks_what_the_secrets_module_remembers():
    from flowrunner import secrets
    from flowrunner.cli.common import ScrubbedStream

    out = io.StringIO()
    secrets.remember("s3cr3t-value-for-scrubbing")
    ScrubbedStream(out).write("token s3cr3t-value-for-scrubbing sent")
    assert out.getvalue() == f"token {secrets.MASK} sent"


def test_validate_of_named_files_loads_no_test_checker_and_no_difflib():
    modules = every_module("validate", "flows/order-status.yaml")
    assert not [m for m in modules if m.startswith("flowrunner.testing")]
    assert "difflib" not in modules  # only a problem needs a suggestion


def test_a_dry_run_loads_no_event_loop_and_no_store_without_a_state_file(tmp_path):
    # nothing to wait on and nothing stored: no asyncio, no sqlite3, no state package
    args = ["--state", str(tmp_path / "none.db"), "run", "order-status", "--dry-run"]
    code, heavy = loaded(*args, "--call", "cli=+15551234567", "--call", "did=+15557654321")
    assert (code, heavy) == (0, ["jinja2", "yaml"])
    assert not (tmp_path / "none.db").exists()


def test_validate_of_a_broken_flow_explains_it_with_jsonschema(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("flow: broken\nsteps: 3\n", encoding="utf-8")
    code, heavy = loaded("validate", str(broken))
    assert code == 1
    assert "jsonschema" in heavy


@pytest.mark.parametrize("name", sorted(LazyGroup.lazy))
def test_the_help_line_of_a_lazy_command_is_its_own(name):
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.help is not None
    assert LazyGroup.lazy[name][1] == command.help.strip().splitlines()[0]


def test_a_flow_without_templates_is_validated_without_jinja2(tmp_path):
    # $-references and plain text compile without Jinja: only `{{ }}` or `{% %}` loads it
    flow = tmp_path / "plain.yaml"
    flow.write_text(
        "flow: plain\nsteps:\n  - id: greet\n    operation: assign\n    set:\n"
        "      caller: $call.cli\n      message: Hello $call.cli, $$1 a minute\n",
        encoding="utf-8",
    )
    assert loaded("validate", str(flow)) == (0, ["yaml"])
