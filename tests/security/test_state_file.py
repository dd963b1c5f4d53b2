"""A damaged, full or read-only state file: damage is found before any side effect
(and ``flowrunner db check`` finds it anywhere), a failure after an execution was
stored never reports it as failed, and the commands that only read work on a
read-only folder."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import Recorder, cli, write_project

FLOW = "flow: push\non_complete: true\nsteps:\n  - id: c\n    webhook: sink\n    method: m\n"
PAGE = 4096


def push_project(root: Path, server: Recorder) -> Path:
    write_project(root, {"sink": {"url": f"{server.url}/ok", "default": True}}, {"push": FLOW})
    return root


def state_db(root: Path) -> Path:
    return root / ".flowrunner" / "state.db"


@pytest.fixture(scope="module")
def used_state(tmp_path_factory: pytest.TempPathFactory, _shared_server: Recorder) -> Path:
    """A state file after 40 runs with pushes (about 40 pages), checkpointed."""
    root = push_project(tmp_path_factory.mktemp("used"), _shared_server)
    for _ in range(40):
        assert cli(root, "run", "push").exit_code == 0
    with sqlite3.connect(state_db(root)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return state_db(root)


def test_damage_is_found_before_any_request_is_sent(
    tmp_path: Path, server: Recorder, used_state: Path
) -> None:
    pages = used_state.stat().st_size // PAGE
    found = 0
    for page in range(1, pages):
        root = push_project(tmp_path / f"p{page}", server)
        state_db(root).parent.mkdir(parents=True)
        shutil.copy(used_state, state_db(root))
        with state_db(root).open("r+b") as file:
            file.seek(page * PAGE)
            file.write(random.Random(page).randbytes(PAGE))
        server.hits.clear()
        result = cli(root, "run", "push")
        check = cli(root, "db", "check")
        if result.exit_code == 3:
            found += 1
            assert server.hits == [], f"page {page}: sent before the damage was reported"
            assert "flowrunner db check" in result.stderr and "Traceback" not in result.stderr
            assert check.exit_code == 1, f"page {page}: db check missed what run found"
        else:
            assert result.exit_code == 0, result.stderr
    assert found >= pages // 2  # most pages hold data; the check is not vacuous


def test_db_check(tmp_path: Path, server: Recorder, used_state: Path) -> None:
    root = push_project(tmp_path, server)
    missing = cli(root, "db", "check")
    assert (missing.exit_code, missing.stdout) == (2, "")
    assert "no state file yet" in missing.stderr
    state_db(root).parent.mkdir(parents=True)
    shutil.copy(used_state, state_db(root))
    sound = cli(root, "db", "check")
    assert (sound.exit_code, sound.stdout) == (0, f"{state_db(root)}: ok\n")
    with state_db(root).open("r+b") as file:  # an index page, which reads never touch
        file.seek(PAGE * (used_state.stat().st_size // PAGE - 1))
        file.write(bytes(PAGE))
    damaged = cli(root, "db", "check")
    assert damaged.exit_code == 1 and damaged.stdout.strip(), damaged.stderr
    assert "Keep a copy of the file" in damaged.stderr
    state_db(root).write_bytes(b"not a database" * 1000)
    garbage = cli(root, "db", "check")
    assert garbage.exit_code == 1 and "Traceback" not in garbage.stderr


FULL_DISK = (
    "CREATE TRIGGER full BEFORE UPDATE ON outbox "
    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
)


def test_a_failure_after_the_record_is_stored_never_reports_it_failed(
    tmp_path: Path, server: Recorder
) -> None:
    """Every write after the execution and its push are stored fails (as on a full
    disk): the executions are reported COMPLETED with their push pending, as stored."""
    root = push_project(tmp_path, server)
    assert cli(root, "run", "push").exit_code == 0  # creates the state file
    with sqlite3.connect(state_db(root)) as conn:
        conn.execute(FULL_DISK)
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n" * 5)
    server.hits.clear()
    out = tmp_path / "records.jsonl"
    batch = cli(root, "run", "push", "--events", str(events), "--output", str(out))
    single = cli(root, "--debug", "run", "push", "--json")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    records.append(json.loads(single.stdout))
    assert [r["status"] for r in records] == ["COMPLETED"] * 6, batch.stderr
    assert {r["on_complete"]["status"] for r in records} == {"pending"}
    assert all("could not be recorded" in r["on_complete"]["last_error"] for r in records)
    assert (batch.exit_code, single.exit_code) == (75, 75)
    stored = json.loads(cli(root, "runs", "list", "--json").stdout)
    assert sorted(r["status"] for r in stored) == ["COMPLETED"] * 7
    with sqlite3.connect(state_db(root)) as conn:
        conn.execute("DROP TRIGGER full")
    drained = cli(root, "deliveries", "drain", "--timeout", "0")
    assert drained.exit_code == 0, drained.stdout + drained.stderr


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a writable folder, the same folder seen read-only)."""
    writable, seen = tmp_path / "rw", tmp_path / "ro"
    writable.mkdir()
    seen.mkdir()
    if os.getuid() != 0:
        yield writable, writable  # made read-only by permissions in the test
        return
    mounted = subprocess.run(["mount", "--bind", str(writable), str(seen)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("running as root, and cannot make a read-only bind mount")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(seen)], check=True)
        yield writable, seen
    finally:
        subprocess.run(["umount", str(seen)], check=True)


def test_reading_commands_work_on_a_read_only_folder(
    read_only: tuple[Path, Path], server: Recorder
) -> None:
    writable, seen = read_only
    push_project(writable, server)
    result = cli(writable, "run", "push", "--json")
    assert result.exit_code == 0
    execution_id = json.loads(result.stdout)["execution_id"]
    if seen == writable:
        os.chmod(state_db(writable), 0o444)
        os.chmod(state_db(writable).parent, 0o555)
    try:
        listed = cli(seen, "runs", "list", "--json")
        shown = cli(seen, "runs", "show", execution_id)
        deliveries = cli(seen, "deliveries", "list")
        dry = cli(seen, "run", "push", "--dry-run")
        for outcome in (listed, shown, deliveries, dry):
            assert (outcome.exit_code, outcome.stderr) == (0, ""), outcome.stderr
        assert [r["execution_id"] for r in json.loads(listed.stdout)] == [execution_id]
        assert "delivered" in deliveries.stdout
        check = cli(seen, "db", "check")
        assert check.exit_code == 0, check.stderr
    finally:
        os.chmod(state_db(writable).parent, 0o755)
