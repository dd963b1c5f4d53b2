"""``run --events --workers N``: one batch spread over N worker processes.

One process runs one event loop, which uses one core. With ``--workers N`` the lines
are run by N worker processes, each the single-process batch of :mod:`flowrunner.batch.local`
(``flowrunner run FLOW --events - --worker``) with its share of ``--concurrency``, its
own connection pool, state connection and group commits. This process (the parent):

* waits until every worker says it is ready (its first output line), then reads and
  numbers the lines with the same reader and the same window of ``4 × concurrency``
  lines as a single-process batch, refuses lines over the size limit itself, and hands
  every other line to the worker with the fewest unanswered lines for its share of the
  concurrency, through the worker's stdin;
* knows which line went to which worker in which order; a worker writes one record per
  line it read, in the order it read them (and skips no byte-order mark: the input's
  own was skipped here), so each record's ``"line"`` (always its first
  member) is replaced by the batch's line number as it comes back;
* counts each record by its status and writes all records in input order, with the
  progress bar and the summary of a single-process batch.

Workers run in a session of their own, so a Ctrl-C reaches the parent only, which
passes each SIGINT or SIGTERM on as SIGTERM: the first stops the workers gracefully
(the usual grace period for executions in flight), a second cancels what still runs.

Every line read still gets exactly one record. A line sent to a worker that stopped
reading after an interrupt is INTERRUPTED; a line sent to a worker that ended on its own
(killed, crashed) is FAILED with reason ``WORKER_LOST`` (the execution may or may not
have run), and the batch goes on with the other workers.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import IO

from flowrunner.batch.lines import Invalid, Oversize, dumps_line, parse_line
from flowrunner.batch.local import READY, TICK, Ordered, Outcome, Output
from flowrunner.batch.progress import ProgressBar
from flowrunner.batch.stats import BatchStats
from flowrunner.jsoncodec import loads

READ_SIZE = 1 << 16
EXIT_CODES = frozenset({0, 1, 75, 130})  # what a worker's batch ends with
_STATUS = re.compile(rb'"status":"([A-Z]+)"')  # the first one is the record's own


class Worker:
    """A worker process and the numbers of the lines it was given and has not answered."""

    def __init__(self, index: int, proc: asyncio.subprocess.Process, share: int) -> None:
        self.index = index
        self.proc = proc
        self.share = share  # its part of the concurrency
        self.lines: deque[int] = deque()
        self.unsent: list[bytes] = []  # lines given to it, written at the next send
        self.writable = True

    def close_input(self) -> None:
        self.writable = False
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    def signal(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass


def shares(concurrency: int, workers: int) -> list[int]:
    """``concurrency`` split over ``workers`` as evenly as it goes (all at least 1)."""
    base, extra = divmod(concurrency, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


class ParallelBatch(Ordered):
    """One batch over worker processes started from ``commands`` (one argv each), each
    running its ``shares`` part of the concurrency."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        shares: Sequence[int],
        fd: int,
        output: Output,
        *,
        window: int,
        bar: ProgressBar,
        stderr: IO[bytes],
        stats: BatchStats | None = None,
    ) -> None:
        super().__init__(output, window=window, bar=bar, stats=stats)
        self.commands = commands
        self.shares = shares
        self.fd = fd
        self.stderr = stderr
        self._workers: list[Worker] = []
        self._dispatcher: asyncio.Task[None] | None = None

    async def run(self) -> Outcome:
        """Run every line; returns once each line read has its record written."""
        loop = asyncio.get_running_loop()
        for index, (command, share) in enumerate(zip(self.commands, self.shares, strict=True)):
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C on the terminal reaches the parent only
            )
            self._workers.append(Worker(index, proc, share))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signalled)
        tasks = [loop.create_task(self._relay(w)) for w in self._workers]
        try:
            # reading starts once every worker is ready (or gone): the rate, like that
            # of a single-process batch, leaves start-up out
            await asyncio.gather(*(self._hello(w) for w in self._workers))
            started = time.monotonic()
            tasks += [loop.create_task(self._collect(w)) for w in self._workers]
            if not self._stopping:  # not interrupted while the workers started
                self._dispatcher = loop.create_task(self._dispatch())
                tasks.append(self._dispatcher)
                self._timers["tick"] = loop.call_later(TICK, self._tick)
                self._start_reading(self.fd)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self._stop_reading()
            for worker in self._workers:
                if worker.proc.returncode is None:  # only after a bug here
                    worker.proc.kill()
                    await worker.proc.wait()
        for result in results:
            if isinstance(result, Exception):
                raise result  # a bug: the guarded command reports it
        return self._finish_run(started)

    def interrupt(self) -> None:
        """Stop reading and stop the workers; a second call makes them cancel what runs."""
        for worker in self._workers:
            worker.signal()
        if self._stopping:
            return
        self._stopping = True
        self._stop_reading()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for worker in self._workers:
            worker.close_input()

    # ---- handing lines out ------------------------------------------------------------

    async def _dispatch(self) -> None:
        async for chunk in self._read_chunks():
            for raw in chunk.lines:
                if self._window_full():
                    await self._send()  # nothing may wait unsent while the window is full
                    await self._wait_for_room()
                number = self._next_line
                self._next_line += 1
                if isinstance(raw, Oversize):
                    problem = parse_line(raw)
                    assert isinstance(problem, Invalid)
                    self._invalid(number, problem)
                    continue
                worker = self._pick()
                if worker is None:
                    self._lost(number, "no worker process is left")
                    self._report("flowrunner: every worker process has ended; reading stopped")
                    self.outcome.worker_error = True
                    self._stop_reading()
                    return  # every worker's input is closed already
                worker.lines.append(number)
                worker.unsent.append(raw)
            await self._send()
        await self._send()
        for worker in self._workers:
            worker.close_input()

    def _pick(self) -> Worker | None:
        """The worker that still takes lines with the fewest unanswered lines for its
        share of the concurrency: shares are kept in proportion, and a worker held up
        by slow executions gets fewer new lines."""
        best: Worker | None = None
        best_load = 0.0
        for worker in self._workers:
            if worker.writable:
                load = len(worker.lines) / worker.share
                if best is None or load < best_load:
                    best, best_load = worker, load
        return best

    async def _send(self) -> None:
        for worker in self._workers:
            if not worker.unsent:
                continue
            data = b"\n".join(worker.unsent) + b"\n"
            worker.unsent.clear()
            stdin = worker.proc.stdin
            if not worker.writable or stdin is None:
                continue  # gone: its lines are answered when its output ends
            try:
                stdin.write(data)
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                worker.writable = False

    # ---- taking records back ----------------------------------------------------------

    async def _hello(self, worker: Worker) -> None:
        """Wait for the worker's first line, which says it is ready; a worker that ends
        before (its stderr says why) takes no lines."""
        stdout = worker.proc.stdout
        assert stdout is not None
        if await stdout.readline() != READY:
            worker.writable = False

    async def _collect(self, worker: Worker) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        partial = b""
        while data := await stdout.read(READ_SIZE):
            records = (partial + data).split(b"\n")
            partial = records.pop()  # a record cut short by a killed worker is not used
            for record in records:
                self._take(worker, record)
        code = await worker.proc.wait()
        worker.writable = False
        self._ended(worker, code)

    def _take(self, worker: Worker, record: bytes) -> None:
        if not worker.lines:
            self._report(f"flowrunner: worker {worker.index + 1} wrote a record for no line")
            self.outcome.worker_error = True
            return
        number = worker.lines.popleft()
        counts = self.outcome.counts
        match = _STATUS.search(record)
        status = match.group(1) if match else b""
        if status == b"COMPLETED":
            counts.completed += 1
        elif status == b"INVALID":
            counts.invalid += 1
        elif status == b"INTERRUPTED":
            counts.interrupted += 1
        else:
            counts.failed += 1
        # the record's own "on_complete" is its last member (a key of that name in
        # "keys" comes before it): null, or an object holding the push's status
        push = record[record.rfind(b'"on_complete":') :]
        if b'"status":"pending"' in push:
            counts.pending += 1
        elif b'"status":"dead"' in push:
            counts.dead += 1
        if self.stats is not None:
            try:
                self.stats.add_record(loads(record))
            except ValueError:  # counted above; a record a worker garbled has no figures
                pass
        # every record starts {"line":n, ... : put the batch's number in place of n
        rest = record[record.find(b",") + 1 :]
        self._finish(number, b'{"line":%d,%s\n' % (number, rest))

    def _ended(self, worker: Worker, code: int) -> None:
        """A worker's output ended: answer the lines it did not."""
        lost = list(worker.lines)
        worker.lines.clear()
        if self._stopping:
            for number in lost:
                self._interrupted(number)  # it stopped reading before them
            return
        if not lost and code in EXIT_CODES:
            return
        why = f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
        self.outcome.worker_error = True
        self._report(
            f"flowrunner: worker {worker.index + 1} of {len(self._workers)} ended "
            f"unexpectedly ({why}); {len(lost)} lines given to it are recorded FAILED"
        )
        for number in lost:
            self._lost(number, f"the worker process running this line ended ({why})")

    def _lost(self, number: int, message: str) -> None:
        self.outcome.counts.failed += 1
        if self.stats is not None:
            self.stats.add("FAILED", "WORKER_LOST", None, None)
        error = {"step": None, "reason": "WORKER_LOST", "message": message}
        record = {"line": number, "status": "FAILED", "error": error, "on_complete": None}
        self._finish(number, dumps_line(record))

    # ---- the workers' messages --------------------------------------------------------

    async def _relay(self, worker: Worker) -> None:
        """Pass a worker's stderr on to ours, a line at a time."""
        stream = worker.proc.stderr
        assert stream is not None
        partial = b""
        while data := await stream.read(READ_SIZE):
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                self._report_bytes(line)
        if partial:
            self._report_bytes(partial)

    def _report(self, message: str) -> None:
        self._report_bytes(message.encode())

    def _report_bytes(self, line: bytes) -> None:
        self.bar.clear()
        self.stderr.write(line + b"\n")
        self.stderr.flush()


async def run_parallel(
    commands: Sequence[Sequence[str]],
    shares: Sequence[int],
    fd: int,
    output: Output,
    *,
    window: int,
    bar: ProgressBar,
    stats: BatchStats | None = None,
) -> Outcome:
    """Run every line of ``fd`` over one worker per command; write the records (and
    count them into ``stats`` when given)."""
    stderr = sys.stderr.buffer
    batch = ParallelBatch(
        commands, shares, fd, output, window=window, bar=bar, stderr=stderr, stats=stats
    )
    return await batch.run()
