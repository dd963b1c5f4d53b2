"""Hostile YAML through the real command line, in a subprocess.

Each file must give exactly one diagnostic with the right rule, exit code 1, no
traceback, and finish well within a generous timeout (the time is printed, not
asserted: these machines are too noisy for that).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent / "cases" / "project"
TIMEOUT = 20  # seconds
DIAGNOSTIC = re.compile(r"^hostile\.yaml:\d+:\d+: error: .* \[(?P<rule>[a-z0-9-]+)\]$")
STEPS = "steps:\n  - id: a\n    operation: assign\n    set: {x: 1}\n"


def alias_bomb() -> str:
    """The "billion laughs": nine levels of nine aliases, 9**9 strings if expanded."""
    lol = ", ".join(['"lol"'] * 9)
    lines = ["flow: bomb", "keys:", f"  a: &a [{lol}]"]
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"  {name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    return "\n".join(lines) + "\n" + STEPS


def deep_nesting() -> str:
    """10,000 nested flow sequences."""
    return "flow: deep\nkeys:\n  x: " + "[" * 10_000 + "]" * 10_000 + "\n" + STEPS


def five_mib() -> str:
    """A valid flow padded with comments to 5 MiB."""
    head = "flow: big\n" + STEPS
    line = "# " + "x" * 77 + "\n"
    return head + line * (5 * 1024 * 1024 // len(line) + 1)


def python_object_apply() -> str:
    """A tag that makes an unsafe YAML loader run a shell command."""
    return (
        "flow: apply\nsteps:\n  - id: a\n    operation: assign\n    set:\n"
        '      x: !!python/object/apply:os.system ["touch {marker}"]\n'
    )


CASES: dict[str, tuple[Callable[[], str], str]] = {
    "alias-bomb": (alias_bomb, "yaml-alias"),
    "deep-nesting": (deep_nesting, "yaml-too-deep"),
    "five-mib": (five_mib, "yaml-too-large"),
    "python-object-apply": (python_object_apply, "yaml-tag"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_gives_one_clean_diagnostic(name: str, tmp_path: Path) -> None:
    make, rule = CASES[name]
    marker = tmp_path / "pwned"
    (tmp_path / "hostile.yaml").write_text(make().replace("{marker}", str(marker)))
    command = [sys.executable, "-m", "flowrunner", "--project", str(PROJECT)]
    began = time.perf_counter()
    done = subprocess.run(
        [*command, "validate", "hostile.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - began
    print(f"{name}: {elapsed:.2f} s")
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr == ""
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    diagnostics = [m for line in lines if (m := DIAGNOSTIC.match(line))]
    assert len(diagnostics) == 1, done.stdout
    assert diagnostics[0].group("rule") == rule
    assert lines == [diagnostics[0].string, "1 error(s), 0 warning(s)"]
    assert not marker.exists()


def test_hostile_stdin_is_refused_the_same_way(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "flowrunner", "--project", str(PROJECT), "validate", "-"]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        input=five_mib(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "<stdin>:1:1: error: file is more than 1048576 bytes; the limit is 1048576 bytes "
        "(1 MiB) [yaml-too-large]",
        "1 error(s), 0 warning(s)",
    ]
    assert "Traceback" not in done.stderr
