"""`python -m bench.ledger`: how fast the ledger writer drains a backlog into PostgreSQL.

Starts its own Redis (AOF on) and PostgreSQL, runs the budget service in this process with its
ledger writer off, and makes a backlog: reserve + commit pairs through the engine (the same
scripts the RPCs run, so each appends its outbox event), timed, as the baseline of the run.
Then one writer drains the backlog, timed. The ratio says whether one writer keeps up with what
one process's hot path produces (above 1: it does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # PostgreSQL is started by fork+exec

from budget_service import server
from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath.budgets import validate_budget
from budget_service.ledger.writer import LedgerWriter
from devstack import PostgresProcess, RedisProcess, free_port
from genproto.budget.v1 import budget_pb2 as pb
from servicekit import logs
from servicekit.settings import Settings

ORG = "bench-ledger"


async def measure(redis: RedisProcess, postgres: PostgresProcess, pairs: int) -> dict[str, Any]:
    settings = Settings.from_env(
        {},
        redis_url=redis.url,
        database_url=postgres.url,
        budget_addr="127.0.0.1:0",
        pricing_addr=f"127.0.0.1:{free_port()}",
        metrics_addr="",
        ledger_writer=False,
        log_level="error",
    )
    app = await server.start(settings)
    try:
        budget = validate_budget(pb.Budget(org=ORG, id="cap", limit_nanos=10**15))
        config = await BudgetRepository(app.pool).upsert(budget, "bench")
        await ConfigSync(app.engine.scripts, app.engine.cache.epoch).push(config, first_of_org=True)
        subject = frozenset({("team", "bench")})

        async def pair(i: int) -> None:
            rid = f"b-{i}"
            await app.engine.reserve(
                ORG, rid, rid, subject, 1_000_000, critical=False, ttl_ms=600_000
            )
            await app.engine.commit(ORG, rid, "900000", 900_000)

        started = time.perf_counter()
        batch = 64
        for first in range(0, pairs, batch):
            await asyncio.gather(*(pair(i) for i in range(first, min(pairs, first + batch))))
        produce_seconds = time.perf_counter() - started
        events = 2 * pairs

        writer = LedgerWriter(app.redis, app.pool, consumer="bench")
        started = time.perf_counter()
        written = await writer.drain_until_empty(timeout_seconds=600)
        drain_seconds = time.perf_counter() - started
        in_ledger = await app.pool.fetchval(
            "SELECT count(*) FROM ledger_events WHERE org = $1", ORG
        )
        if written != events or in_ledger != events:
            raise RuntimeError(f"{events} events made, {written} written, {in_ledger} in ledger")
        return {
            "events": events,
            "hot_path_events_per_second": round(events / produce_seconds),
            "writer_events_per_second": round(events / drain_seconds),
            "drain_seconds": round(drain_seconds, 3),
            "ratio_writer_to_hot_path": round(produce_seconds / drain_seconds, 2),
        }
    finally:
        await app.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument("--pairs", type=int, default=20_000, help="reserve+commit pairs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    logs.configure("error", "console")
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        root = Path(tmp)
        redis = RedisProcess(root / "redis", free_port())
        postgres = PostgresProcess(root / "pg", free_port())
        with redis, postgres:
            print(f"making a backlog of {2 * args.pairs} events ...", file=sys.stderr)
            figures = asyncio.run(measure(redis, postgres, args.pairs))
    for name, value in figures.items():
        print(f"{name:32} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
