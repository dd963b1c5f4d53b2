"""Which PostgreSQL driver for the state store: psycopg 3 (sync, as the store is called)
against asyncpg (async, as the drivers' own benchmarks favour), on the store's workload.

The workload, on a fresh database of the local server (``FLOWRUNNER_BENCH_POSTGRES``,
default ``postgresql://postgres@127.0.0.1:5432/test``):

- *insert*: 1,000 execution ends, one transaction each (one ``runs`` row and one
  ``outbox`` row), as ``run`` records them one by one;
- *group*: 2,000 ends in lots of 200 (one transaction per lot), as the recorder does;
- *claim*: 1,000 claims of one queued row each (``UPDATE ... WHERE id = (SELECT ...
  FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING``), as a worker claims.

Each driver runs each workload in the same process, A B A B interleaved, three rounds;
the medians of wall and CPU time per operation are printed, with asyncpg's as a ratio of
psycopg's. Run: ``.venv/bin/python bench/pg_driver.py`` (needs asyncpg installed).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable

import asyncpg
import psycopg

ADMIN = os.environ.get("FLOWRUNNER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = """
CREATE TABLE runs (execution_id text PRIMARY KEY, flow text, status text,
                   started_at float8, ended_at float8, record text);
CREATE TABLE outbox (id text PRIMARY KEY, execution_id text, payload bytea, status text,
                     next_attempt_at float8);
CREATE TABLE queue (id text PRIMARY KEY, status text, lease_until float8, seq bigserial);
CREATE INDEX queue_ready ON queue (seq) WHERE status = 'queued';
"""
RECORD = '{"execution_id": "x", "flow": "f", "status": "COMPLETED", "keys": {"a": 1}}' * 4
RUN = "INSERT INTO runs VALUES ({}, 'f', 'COMPLETED', 1.0, 2.0, {})"
PUSH = "INSERT INTO outbox VALUES ({}, {}, {}, 'pending', 1.0)"
CLAIM = (
    "UPDATE queue SET status = 'running', lease_until = {} WHERE id = (SELECT id FROM queue "
    "WHERE status = 'queued' ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id"
)
INSERTS, GROUPED, LOT, CLAIMS = 1000, 2000, 200, 1000


def pg(sql: str) -> str:
    return sql.format(*["%s"] * sql.count("{}"))


def apg(sql: str) -> str:
    return sql.format(*[f"${i + 1}" for i in range(sql.count("{}"))])


def ends(count: int) -> list[tuple[str, str]]:
    return [(uuid.uuid4().hex, RECORD) for _ in range(count)]


def psycopg_round(url: str) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE runs, outbox, queue")
        items = ends(INSERTS)

        def insert() -> None:
            for eid, rec in items:
                with conn.transaction():
                    conn.execute(pg(RUN), (eid, rec))
                    conn.execute(pg(PUSH), ("m" + eid, eid, b"{}"))

        out["insert"] = timed(insert, INSERTS)
        lots = ends(GROUPED)

        def group() -> None:
            for start in range(0, GROUPED, LOT):
                lot = lots[start : start + LOT]
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(pg(RUN), lot)
                    cur.executemany(pg(PUSH), [("m" + e, e, b"{}") for e, _ in lot])

        out["group"] = timed(group, GROUPED)
        with conn.cursor() as cur:
            cur.executemany(pg("INSERT INTO queue (id, status) VALUES ({}, 'queued')"),
                            [(uuid.uuid4().hex,) for _ in range(CLAIMS)])  # fmt: skip

        def claim() -> None:
            for _ in range(CLAIMS):
                conn.execute(pg(CLAIM), (time.time() + 30,)).fetchone()

        out["claim"] = timed(claim, CLAIMS)
    return out


async def asyncpg_round(url: str) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    conn = await asyncpg.connect(url)
    await conn.execute("TRUNCATE runs, outbox, queue")
    items = ends(INSERTS)

    async def insert() -> None:
        for eid, rec in items:
            async with conn.transaction():
                await conn.execute(apg(RUN), eid, rec)
                await conn.execute(apg(PUSH), "m" + eid, eid, b"{}")

    out["insert"] = await atimed(insert, INSERTS)
    lots = ends(GROUPED)

    async def group() -> None:
        for start in range(0, GROUPED, LOT):
            lot = lots[start : start + LOT]
            async with conn.transaction():
                await conn.executemany(apg(RUN), lot)
                await conn.executemany(apg(PUSH), [("m" + e, e, b"{}") for e, _ in lot])

    out["group"] = await atimed(group, GROUPED)
    await conn.executemany(apg("INSERT INTO queue (id, status) VALUES ({}, 'queued')"),
                           [(uuid.uuid4().hex,) for _ in range(CLAIMS)])  # fmt: skip

    async def claim() -> None:
        for _ in range(CLAIMS):
            await conn.fetchrow(apg(CLAIM), time.time() + 30)

    out["claim"] = await atimed(claim, CLAIMS)
    await conn.close()
    return out


def timed(fn: Callable[[], None], count: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) / count * 1e6, (time.process_time() - cpu) / count * 1e6


async def atimed(fn: Callable[[], object], count: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    await fn()  # type: ignore[misc]
    return (time.perf_counter() - wall) / count * 1e6, (time.process_time() - cpu) / count * 1e6


def main() -> None:
    name = f"flowrunner_bench_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}".encode())
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA.encode())
        rounds: dict[str, list[dict[str, tuple[float, float]]]] = {"psycopg": [], "asyncpg": []}
        for _ in range(3):
            rounds["psycopg"].append(psycopg_round(url))
            rounds["asyncpg"].append(asyncio.run(asyncpg_round(url)))
        report(rounds)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


def report(rounds: dict[str, list[dict[str, tuple[float, float]]]]) -> None:
    head = ("workload", "driver", "wall µs/op", "CPU µs/op", "wall ratio", "CPU ratio")
    print("{:8} {:8} {:>11} {:>10} {:>10} {:>9}".format(*head))
    for work in ("insert", "group", "claim"):
        base = None
        for driver in ("psycopg", "asyncpg"):
            wall = statistics.median(r[work][0] for r in rounds[driver])
            cpu = statistics.median(r[work][1] for r in rounds[driver])
            base = base or (wall, cpu)
            ratios = (wall / base[0], cpu / base[1])
            cells = f"{wall:11.1f} {cpu:10.1f} {ratios[0]:10.2f} {ratios[1]:9.2f}"
            print(f"{work:8} {driver:8} {cells}")


if __name__ == "__main__":
    main()
