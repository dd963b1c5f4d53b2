"""The byte budget that bounds the memory of large records while they are finished:
a record's share is the size of its JSON text and of its push's payload, times the
copies made of each; small records take none, and an execution waits for room while
others hold the budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import Receiver, plan_of, write_project

from flowrunner.budget import LARGE, PAYLOAD_COPIES, TEXT_COPIES, ByteBudget, record_cost
from flowrunner.runner import Inputs, Runner
from flowrunner.secrets import Secrets


def test_a_small_record_costs_nothing_and_a_large_one_its_copies() -> None:
    threshold = -(-LARGE // TEXT_COPIES)  # the first text size whose copies reach LARGE
    assert record_cost(0, 0) == 0
    assert record_cost(threshold - 1, 0) == 0
    assert record_cost(threshold, 0) == threshold * TEXT_COPIES
    assert record_cost(10 << 20, 0) == (10 << 20) * TEXT_COPIES
    # a small text with a large payload (the call is in the push, not in the record)
    payload = -(-LARGE // PAYLOAD_COPIES)
    assert record_cost(100, (LARGE - 100 * TEXT_COPIES) // PAYLOAD_COPIES - 1) == 0
    assert record_cost(100, payload) == 100 * TEXT_COPIES + payload * PAYLOAD_COPIES


async def test_an_execution_waits_for_room_and_one_larger_than_the_budget_runs_alone() -> None:
    budget = ByteBudget(100)
    order: list[str] = []
    first_in, release = asyncio.Event(), asyncio.Event()

    async def hold(name: str, size: int, gate: asyncio.Event | None = None) -> None:
        async with budget.hold(size):
            order.append(f"{name} in")
            if gate is not None:
                first_in.set()
                await gate.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(hold("a", 60, release))
    await first_in.wait()
    second = asyncio.create_task(hold("b", 60))
    huge = asyncio.create_task(hold("c", 10_000))  # capped at the whole budget
    await asyncio.sleep(0.01)
    assert order == ["a in"] and budget.free == 40  # b and c wait for room
    release.set()
    await asyncio.gather(first, second, huge)
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert budget.free == 100


class Spy(ByteBudget):
    """Notes every share given back (each share taken is given back once)."""

    def __init__(self, total: int) -> None:
        super().__init__(total)
        self.held: list[int] = []

    async def give(self, size: int) -> None:
        self.held.append(size)
        await super().give(size)


# a flow whose record holds the caller's number: as large as the call makes it
SIZED = """
    flow: sized
    steps:
      - id: note
        operation: assign
        set:
          caller: $call.cli
"""
# JSON writes each as 6 bytes: the three copies of a record's text holding it pass LARGE
BIG = "\x01" * (LARGE // 12)


async def test_only_a_large_record_holds_a_share_of_its_exact_size(tmp_path: Path) -> None:
    plan = plan_of(write_project(tmp_path, {}, {"sized": SIZED}), "sized")
    async with Runner(plan, Secrets(env={}), on_complete=False) as runner:
        spy = runner.budget = Spy(runner.budget.total)
        small, small_text = await runner.run_encoded(Inputs(call={"cli": "+1555"}))
        large, large_text = await runner.run_encoded(Inputs(call={"cli": BIG}))
    assert small.status == large.status == "COMPLETED"
    assert spy.held == [len(large_text) * TEXT_COPIES]
    assert len(large_text) > 6 * len(BIG)
    assert spy.free == spy.total  # given back
    assert b'"+1555"' in small_text


async def test_a_large_record_that_must_wait_is_written_again_once_it_holds_room(
    tmp_path: Path,
) -> None:
    plan = plan_of(write_project(tmp_path, {}, {"sized": SIZED}), "sized")
    async with Runner(plan, Secrets(env={}), on_complete=False) as runner:
        spy = runner.budget = Spy(runner.budget.total)
        spy.free = 0  # another execution holds it all, for now
        waiting = asyncio.create_task(runner.run_encoded(Inputs(call={"cli": BIG})))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # no room: it waits
        await spy.give(spy.total)
        record, text = await asyncio.wait_for(waiting, 10)
    assert record.status == "COMPLETED"
    assert spy.held == [spy.total, len(text) * TEXT_COPIES]
    assert spy.free == spy.total


async def test_a_large_call_holds_a_share_for_its_push(tmp_path: Path, receiver: Receiver) -> None:
    """The call is not in the record's text but in its push: the push's payload counts
    (what the payload holds of the call, not the whole call)."""
    flow = """
        flow: pushed
        on_complete: true
        steps:
          - id: note
            operation: assign
            set:
              note: $call.note
    """
    webhooks = {"events": {"url": receiver.at("/events"), "default": True, "methods": {}}}
    plan = plan_of(write_project(tmp_path, webhooks, {"pushed": flow}), "pushed")
    async with Runner(plan, Secrets(env={})) as runner:
        spy = runner.budget = Spy(runner.budget.total)
        small, _ = await runner.run_encoded(Inputs(call={"cli": "+1555", "other": BIG}))
        large, text = await runner.run_encoded(Inputs(call={"cli": BIG}))
    assert small.on_complete is not None and small.on_complete["status"] == "delivered"
    assert large.on_complete is not None and large.on_complete["status"] == "delivered"
    payload = receiver.hits("/events")[1].body  # the payload as sent
    assert len(payload) > 6 * len(BIG)
    [held] = spy.held
    # the text held its share before the push's outcome was written into it
    assert len(text) - 200 < (held - len(payload) * PAYLOAD_COPIES) / TEXT_COPIES <= len(text)
    assert spy.free == spy.total
