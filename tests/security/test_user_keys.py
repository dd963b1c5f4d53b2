"""User keys under concurrent writers: a read-modify-write of a user key is one write
transaction, so increments made by several processes at once are never lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowrunner.state.sqlite.store import stored_user_keys

from .helpers import write_project

BUMP = """\
flow: bump
steps:
  - id: bump
    operation: assign
    set:
      $user.key.counter: "{{ $user.key.counter + 1 }}"
      $user.key.twice: "{{ $user.key.twice + 2 }}"
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_increments_from_three_processes_are_all_kept(tmp_path: Path, workers: str) -> None:
    project = write_project(tmp_path, {}, {"bump": BUMP}, user_keys={"counter": 0, "twice": 0})
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n" * 300)
    command = [sys.executable, "-m", "flowrunner", "--project", str(project.root), "run", "bump"]
    procs = [
        subprocess.Popen(
            [*command, "--events", str(events), "--concurrency", "8", "--workers", workers],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    keys = stored_user_keys(tmp_path / ".flowrunner" / "state.db")
    assert (keys["counter"], keys["twice"]) == (900, 1800)
