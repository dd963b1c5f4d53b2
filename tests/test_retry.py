"""Retries of a webhook step against a real loopback receiver: which answers are tried
again, how long between attempts, the same Idempotency-Key each time, the record's
``attempts``; and the pure policy arithmetic."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Receiver, execute, free_port, plan_of, verify_signature, write_project

from flowrunner.execution import retry
from flowrunner.net.retry_after import retry_after
from flowrunner.source.model import RetryPolicy

FLOW = """\
flow: retried
steps:
  - id: call
    webhook: hook
    method: lookup
    %s
    on_failure: sorry
  - id: done
    operation: assign
    set: {message: done}
    next: end
  - id: sorry
    operation: assign
    set: {message: sorry}
"""
FAST = {"attempts": 3, "delay": 0.01, "max_delay": 0.05, "jitter": 0}


def scripted(receiver: Receiver, *answers: int | tuple[int, dict[str, str]]) -> list[float]:
    """Answer ``/hook`` with these statuses in turn (the last repeats); the arrival times."""
    times: list[float] = []

    async def answer(_: web.Request) -> web.StreamResponse:
        times.append(time.monotonic())
        item = answers[min(len(times), len(answers)) - 1]
        status, headers = item if isinstance(item, tuple) else (item, {})
        return web.json_response({"n": len(times)}, status=status, headers=headers)

    receiver.on("/hook", answer)
    return times


def project(tmp_path: Path, url: str, step_retry: Any = None, **webhook: Any) -> Path:
    hook = {"url": url, "methods": {"lookup": {"response": {"n": "n"}}}, **webhook}
    line = f"retry: {step_retry}" if step_retry is not None else ""
    return write_project(tmp_path, {"hook": hook}, {"retried": FLOW % line})


def policy_text(policy: dict[str, Any]) -> str:
    items = ", ".join(f'"{k}": {v}' if k == "on" else f"{k}: {v}" for k, v in policy.items())
    return "{" + items + "}"


async def run(root: Path) -> Any:
    return await execute(plan_of(root, "retried"), on_complete=False)


def call_step(record: Any) -> dict[str, Any]:
    return record.steps[0].as_dict()


async def test_503_503_200_is_three_attempts_with_one_idempotency_key(
    receiver: Receiver, tmp_path: Path
) -> None:
    scripted(receiver, 503, 503, 200)
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(FAST)))
    assert record.status == "COMPLETED", record.error
    keys = {r.headers["Idempotency-Key"] for r in receiver.requests}
    assert keys == {f"{record.execution_id}:call"}
    assert len(receiver.requests) == 3
    step = call_step(record)
    assert (step["outcome"], step["attempts"], step["webhook"]) == ("ok", 3, "hook")
    assert step["response"] == {"status": 200}
    # the outcome keys describe the last attempt
    assert record.keys["response_status_code"] == 200
    assert record.keys["response_status"] == "SUCCESS"
    assert record.keys["n"] == 3
    assert [s.id for s in record.steps] == ["call", "done"]


async def test_exhausted_attempts_take_on_failure(receiver: Receiver, tmp_path: Path) -> None:
    scripted(receiver, 503)
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(FAST)))
    assert len(receiver.requests) == 3
    assert [s.id for s in record.steps] == ["call", "sorry"]
    assert record.status == "COMPLETED"
    step = call_step(record)
    assert (step["outcome"], step["attempts"]) == ("failed", 3)
    assert record.keys["response_status_code"] == 503
    assert record.keys["error_reason"] == "SERVER_ERROR"


async def test_a_404_is_not_retried_unless_listed(receiver: Receiver, tmp_path: Path) -> None:
    scripted(receiver, 404, 200)
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(FAST)))
    assert len(receiver.requests) == 1
    assert call_step(record)["attempts"] == 1
    assert record.keys["error_reason"] == "CLIENT_ERROR"

    receiver.requests.clear()
    scripted(receiver, 404, 200)
    listed = {**FAST, "on": "[404]"}
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(listed)))
    assert len(receiver.requests) == 2
    assert (call_step(record)["attempts"], record.keys["response_status_code"]) == (2, 200)


async def test_only_what_on_lists_is_retried(receiver: Receiver, tmp_path: Path) -> None:
    scripted(receiver, 503, 200)
    only_4xx = {**FAST, "on": "[4xx]"}
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(only_4xx)))
    assert (len(receiver.requests), call_step(record)["attempts"]) == (1, 1)
    receiver.requests.clear()
    scripted(receiver, 429, 409, 200)
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(only_4xx)))
    assert (len(receiver.requests), record.keys["response_status_code"]) == (3, 200)


async def test_retry_after_is_respected(receiver: Receiver, tmp_path: Path) -> None:
    times = scripted(receiver, (503, {"Retry-After": "1"}), 200)
    policy = {"attempts": 2, "delay": 0.01, "max_delay": 5, "jitter": 0}
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(policy)))
    assert record.status == "COMPLETED"
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95


async def test_retry_after_is_never_waited_past_max_delay(
    receiver: Receiver, tmp_path: Path
) -> None:
    times = scripted(receiver, (429, {"Retry-After": "3600"}), 200)
    policy = {"attempts": 2, "delay": 0.01, "max_delay": 0.2, "jitter": 0}
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(policy)))
    assert record.status == "COMPLETED"
    assert 0.15 <= times[1] - times[0] < 3


@pytest.mark.parametrize(
    "value",
    [
        "9" * 5000,
        "\u00b2",
        "-5",
        "1e9",
        "Wed, 99 Foo 99999 99:99:99 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        " ",
    ],
)
async def test_a_junk_or_huge_retry_after_breaks_nothing(
    receiver: Receiver, tmp_path: Path, value: str
) -> None:
    times = scripted(receiver, (503, {"Retry-After": value}), 200)
    policy = {"attempts": 2, "delay": 0.01, "max_delay": 0.1, "jitter": 0}
    record = await run(project(tmp_path, receiver.at("/hook"), policy_text(policy)))
    assert record.status == "COMPLETED", record.error
    assert times[1] - times[0] < 3


async def test_the_webhook_policy_applies_and_a_steps_own_wins(
    receiver: Receiver, tmp_path: Path
) -> None:
    scripted(receiver, 503, 200)
    root = project(tmp_path, receiver.at("/hook"), retry=FAST)
    record = await run(root)
    assert (len(receiver.requests), call_step(record)["attempts"]) == (2, 2)
    receiver.requests.clear()
    scripted(receiver, 503, 200)
    root = project(tmp_path, receiver.at("/hook"), "{attempts: 1}", retry=FAST)
    record = await run(root)
    assert (len(receiver.requests), call_step(record)["attempts"]) == (1, 1)


async def test_no_policy_is_exactly_one_attempt(receiver: Receiver, tmp_path: Path) -> None:
    scripted(receiver, 503, 200)
    record = await run(project(tmp_path, receiver.at("/hook")))
    assert len(receiver.requests) == 1
    assert call_step(record)["attempts"] == 1
    assert record.keys["error_reason"] == "SERVER_ERROR"


async def test_a_refused_connection_is_retried(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    record = await run(project(tmp_path, url, policy_text(FAST)))
    step = call_step(record)
    assert (step["outcome"], step["attempts"]) == ("failed", 3)
    assert record.keys["error_reason"] == "CONNECTION_ERROR"
    no_connection = {**FAST, "on": "[timeout, 5xx]"}
    record = await run(project(tmp_path, url, policy_text(no_connection)))
    assert call_step(record)["attempts"] == 1


async def test_a_forbidden_destination_is_never_retried(tmp_path: Path) -> None:
    # not on the allowlist: another attempt would be refused the same way
    root = project(tmp_path, "http://127.0.0.2:9/hook", policy_text(FAST))
    record = await run(root)
    step = call_step(record)
    assert (step["attempts"], record.keys["error_reason"]) == (1, "NOT_ALLOWED")


async def test_every_attempt_of_a_signed_webhook_has_a_valid_signature(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_KEY", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    scripted(receiver, 500, 500, 200)
    root = project(
        tmp_path, receiver.at("/hook"), policy_text(FAST), signing_secret={"secret": "HOOK_KEY"}
    )
    record = await run(root)
    assert record.status == "COMPLETED"
    assert len(receiver.requests) == 3
    for seen in receiver.requests:
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        assert verify_signature(secret, seen.headers, seen.body)
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1


# ---- the policy arithmetic -----------------------------------------------------------


def test_exponential_backoff_doubles_up_to_max_delay() -> None:
    policy = RetryPolicy(attempts=10, delay=0.5, max_delay=3, jitter=0)
    waits = [retry.backoff(policy, n) for n in range(1, 6)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    constant = RetryPolicy(attempts=10, backoff="constant", delay=0.5, jitter=0)
    assert [retry.backoff(constant, n) for n in range(1, 4)] == [0.5, 0.5, 0.5]


def test_jitter_spreads_each_wait_within_its_share() -> None:
    policy = RetryPolicy(attempts=3, delay=1.0, jitter=0.2)
    assert retry.backoff(policy, 1, rand=lambda: 0.0) == pytest.approx(0.8)
    assert retry.backoff(policy, 1, rand=lambda: 1.0) == pytest.approx(1.2)
    assert retry.backoff(policy, 2, rand=lambda: 0.5) == pytest.approx(2.0)


def test_retry_after_raises_the_wait_but_never_past_max_delay() -> None:
    policy = RetryPolicy(attempts=3, delay=0.1, max_delay=5, jitter=0)
    assert retry.wait(policy, 1, {"Retry-After": "2"}, 0.0) == 2.0
    assert retry.wait(policy, 1, {"retry-after": "600"}, 0.0) == 5.0
    assert retry.wait(policy, 1, {"Retry-After": "0"}, 0.0) == 0.1  # never shorter
    assert retry.wait(policy, 1, {}, 0.0) == 0.1


def test_retry_after_parsing_is_bounded() -> None:
    now = 1_800_000_000.0
    assert retry_after({"Retry-After": "120"}, now) == 120.0
    assert retry_after({"retry-after": " 7 "}, now) == 7.0
    assert retry_after({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, now) == 0.0
    date = "Fri, 15 Jan 2027 08:00:30 GMT"
    assert retry_after({"Retry-After": date}, 1_800_000_000.0 - 10**9) is not None
    for junk in ("\u00b2", "\u0663", "-1", "1.5", "soon", "", "x" * 100):
        assert retry_after({"Retry-After": junk}, now) is None, junk
    # more digits than 300 years of seconds: "as late as allowed", which callers bound
    for huge in ("9" * 11, "9" * 5000):
        assert retry_after({"Retry-After": huge}, now) == math.inf, huge
    assert retry_after({"Retry-After": "9" * 10}, now) == 9_999_999_999.0


def test_which_failures_are_retryable() -> None:
    default = RetryPolicy(attempts=2)
    assert retry.retryable(default, None, "timeout")
    assert retry.retryable(default, None, "connection")
    assert not retry.retryable(default, None, "refused")
    assert not retry.retryable(default, None, "too_large")
    assert not retry.retryable(default, None, "disabled")
    assert retry.retryable(default, 500, None) and retry.retryable(default, 429, None)
    assert not retry.retryable(default, 404, None)
    assert not retry.retryable(default, 200, None) and not retry.retryable(default, 302, None)
    assert retry.retryable(RetryPolicy(attempts=2, on=("404",)), 404, None)
    assert not retry.retryable(RetryPolicy(attempts=2, on=("404",)), 500, None)


def test_the_outbox_reads_a_junk_retry_after_without_crashing() -> None:
    from flowrunner.oncomplete.delivery import retry_after as push_retry_after

    for junk in ("\u00b2", "x" * 100):
        assert push_retry_after({"Retry-After": junk}, 100.0) is None
    assert push_retry_after({"Retry-After": "9" * 5000}, 100.0) == math.inf  # bounded later
    assert push_retry_after({"Retry-After": "30"}, 100.0) == 130.0


def test_a_policy_that_is_not_a_number_never_waits_unbounded() -> None:
    nan = float("nan")
    policy = RetryPolicy(attempts=3, delay=nan, max_delay=nan, jitter=nan)
    assert retry.wait(policy, 1, {"Retry-After": "999999"}, 0.0) == retry.MAX_WAIT
    assert retry.wait(policy, 1, {}, 0.0) == 0.0
