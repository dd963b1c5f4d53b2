"""Times from a peer or a clock are bounded: a receiver's ``Retry-After`` (huge, not
ASCII digits, a date in year 9999) and times written by a clock that was ahead never
break the outbox listing, never keep a push from going out or going dead, and a
``Retry-After`` never delays a push longer than the longest wait of the schedule."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from .helpers import Recorder, cli, write_project

SCHEDULE = [60, 120]
FLOW = "flow: push\non_complete: true\nsteps:\n  - id: s\n    operation: assign\n    set: {a: 1}\n"


def push_project(root: Path, url: str) -> Path:
    hooks = {"sink": {"url": url, "default": True}}
    write_project(root, hooks, {"push": FLOW}, delivery={"retry_schedule": SCHEDULE})
    return root


def outbox(root: Path) -> list[dict]:
    listed = cli(root, "deliveries", "list", "--json")
    text = cli(root, "deliveries", "list")
    assert (listed.exit_code, text.exit_code) == (0, 0), listed.stderr + text.stderr
    return json.loads(listed.stdout)


def unix(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


BOMBS = {
    "30 digits": "9" * 30,
    "5000 digits": "9" * 5000,
    "superscript two": "²",
    "arabic-indic digits": "٣",
    "year 9999": "Fri, 31 Dec 9999 23:59:59 GMT",
    "past date": "Thu, 01 Jan 1970 00:00:00 GMT",
    "garbage": "soon" * 100,
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_retry_after_bomb_is_bounded(tmp_path: Path, server: Recorder, name: str) -> None:
    value = BOMBS[name]
    root = push_project(tmp_path, f"{server.url}/status/503?retry_after={quote(value)}")
    before = time.time()
    result = cli(root, "run", "push")
    assert result.exit_code == 75, result.stderr
    (row,) = outbox(root)
    assert (row["status"], row["last_error"]) == ("pending", "HTTP 503")
    wait = unix(row["next_attempt_at"]) - before
    assert 60 * 0.8 - 1 <= wait <= max(SCHEDULE) + 5
    if name in ("30 digits", "5000 digits", "year 9999"):
        assert wait >= max(SCHEDULE) - 1  # honoured as far as the schedule allows


def state_db(root: Path) -> Path:
    return root / ".flowrunner" / "state.db"


def pending_push(root: Path, server: Recorder) -> None:
    """A push that failed once (HTTP 503), pointed afterwards at a receiver saying 200."""
    assert cli(root, "run", "push").exit_code == 75
    with sqlite3.connect(state_db(root)) as conn:
        conn.execute("UPDATE outbox SET url = ?", (f"{server.url}/ok",))


def test_a_stored_time_out_of_range_is_listed_and_sent(tmp_path: Path, server: Recorder) -> None:
    """A next attempt of 1e30 (what an unbounded Retry-After used to store)."""
    root = push_project(tmp_path, f"{server.url}/status/503")
    pending_push(root, server)
    with sqlite3.connect(state_db(root)) as conn:
        conn.execute("UPDATE outbox SET next_attempt_at = 1e30")
    (row,) = outbox(root)
    assert row["next_attempt_at"] == "9999-12-31T23:59:59.000+00:00"
    drained = cli(root, "deliveries", "drain", "--timeout", "0")
    assert drained.exit_code == 0, drained.stdout + drained.stderr
    assert [row["status"] for row in outbox(root)] == ["delivered"]


@pytest.mark.parametrize("now", [False, True])
def test_times_from_a_clock_a_day_ahead_do_not_hold_a_push(
    tmp_path: Path, server: Recorder, now: bool
) -> None:
    """An attempt made with a clock a day ahead left its times in the future, and a
    process whose clock was ahead died holding the lease."""
    root = push_project(tmp_path, f"{server.url}/status/503")
    pending_push(root, server)
    ahead = time.time() + 86_400
    with sqlite3.connect(state_db(root)) as conn:
        conn.execute(
            "UPDATE outbox SET last_attempt_at = ?, next_attempt_at = ?, lease_owner = 'x', "
            "lease_until = ?",
            (ahead, ahead + 60, ahead + 30),
        )
    args = ["--now"] if now else []
    drained = cli(root, "deliveries", "drain", "--timeout", "0", *args)
    assert drained.exit_code == 0, drained.stdout + drained.stderr
    assert [row["status"] for row in outbox(root)] == ["delivered"]
