"""Reconciliation: Redis counters against the PostgreSQL ledger, and the rebuild of Redis from it.

`compare` snapshots an org's counters and the id of its newest ledger event atomically
(scripts/snapshot.lua), waits until the ledger writer has written every event up to that id,
and sums the ledger's effects up to that id: spent per budget for the period Redis counts, holds
per budget over all time. Any difference is reported; there should be none.

A counter below zero is always reported, even where the ledger sums to the same value. So is a
reservation the ledger ends twice (its hold given back by two of commit, release and expire: a
Redis rewound to before a commit expired the hold again): the sums count it once, in its final
state, and the report says that it happened.

`--rebuild` restores an org's config, counters and reservations from the ledger
(budget_service/ledger/recovery.py): after Redis lost its data (the service does it by itself),
or after a Redis promoted from a replica that missed the latest writes. It fences the org while
it works (calls answer UNAVAILABLE and are retried), so traffic need not stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import asyncpg
import structlog

from budget_service.config import epoch as epochs
from budget_service.config.budget_repo import BudgetRepository
from budget_service.hotpath import keys, store
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.store import Scripts, redis_call
from budget_service.ledger.progress import id_tuple, wait_written
from budget_service.ledger.recovery import LEDGER_SUMS, Rebuilder, Rebuilt, active_orgs
from servicekit import db, logs
from servicekit.clock import SystemClock
from servicekit.errors import ServiceError, Unavailable
from servicekit.settings import Settings

log = structlog.get_logger(__name__)
LOST_WRITES = "events_redis_never_saw"
ENDED_TWICE = "reservations_ended_twice"

# Events of the org whose stream id is past the newest Redis's outbox ever generated.
LEDGER_AHEAD = """
SELECT count(*) FROM ledger_events
WHERE org = $1
  AND (split_part(stream_id, '-', 1)::bigint, split_part(stream_id, '-', 2)::bigint)
      > ($2::bigint, $3::bigint)
"""

# Reservations of the org (up to a stream position) whose hold the ledger says was given back
# more than once: two of commit (one that found the hold still held), release and expire. Only
# a Redis that lost writes does that (rewound to before a commit, it expired the hold again).
# The sums count each reservation once, in its final state; this says that it happened.
ENDED_TWICE_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM ledger_events
    WHERE org = $1
      AND ((type = 'commit' AND released_nanos <> 0)
           OR (type IN ('release', 'expire') AND amount_nanos <> 0))
      AND (split_part(stream_id, '-', 1)::bigint, split_part(stream_id, '-', 2)::bigint)
          <= ($2::bigint, $3::bigint)
    GROUP BY reservation_id, created_ms
    HAVING count(*) > 1
) twice
"""


@dataclass(frozen=True)
class Difference:
    """A counter whose Redis value is not what the ledger sums to."""

    org: str
    budget_id: str
    budget_uid: int
    # "spent" or "reserved"; or LOST_WRITES, when the ledger has events newer than any Redis's
    # outbox ever had (a Redis promoted from a replica that missed writes): budget_id is '' and
    # ledger_nanos counts those events; or ENDED_TWICE: ledger_nanos reservations whose hold
    # the ledger gives back more than once (counted once in the sums)
    counter: str
    redis_nanos: int
    ledger_nanos: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


async def compare_org(
    scripts: Scripts,
    pool: asyncpg.Pool,
    org: str,
    budgets: list[BudgetConfig],
    *,
    wait_seconds: float = 30.0,
) -> list[Difference]:
    """The differences between `org`'s Redis counters and its ledger (none when all is well)."""
    if not budgets:
        return []
    reply = await scripts.run(
        "snapshot", [keys.ledger(org), *(keys.budget(org, b.uid) for b in budgets)], []
    )
    last_id, states = reply[0], reply[1] or []
    await wait_written(scripts.client, org, last_id, wait_seconds)
    # No stream: no event since Redis lost its data (or ever), so every ledger event counts.
    ms, seq = id_tuple(last_id) if last_id != "0-0" else (2**62, 0)
    pstarts = [int(s[2]) for s in states]
    rows = await pool.fetch(LEDGER_SUMS, org, [b.uid for b in budgets], pstarts, ms, seq)
    sums = {r["budget_uid"]: (int(r["spent"]), int(r["reserved"])) for r in rows}
    out = []
    for b, (spent, reserved, _pstart, _exists, _overage) in zip(budgets, states, strict=True):
        ledger_spent, ledger_reserved = sums.get(b.uid, (0, 0))
        for counter, in_redis, in_ledger in (
            ("spent", int(spent), ledger_spent),
            ("reserved", int(reserved), ledger_reserved),
        ):
            # A negative counter is wrong whatever the ledger says: no spend or hold is below 0.
            if in_redis != in_ledger or in_redis < 0:
                out.append(Difference(org, b.id, b.uid, counter, in_redis, in_ledger))
    twice = await pool.fetchval(ENDED_TWICE_SQL, org, ms, seq)
    if twice:
        out.append(Difference(org, "", 0, ENDED_TWICE, 0, int(twice)))
    if last_id != "0-0":
        # A rewound outbox sums to its rewound counters: only events past it show the loss.
        ahead = await pool.fetchval(LEDGER_AHEAD, org, ms, seq)
        if ahead:
            out.append(Difference(org, "", 0, LOST_WRITES, 0, int(ahead)))
    return out


async def compare(
    scripts: Scripts, pool: asyncpg.Pool, *, org: str | None = None, wait_seconds: float = 30.0
) -> list[Difference]:
    """Differences for one org or all of them."""
    by_org = await BudgetRepository(pool).all_by_org()
    orgs = [org] if org is not None else sorted(by_org)
    out: list[Difference] = []
    for name in orgs:
        found = await compare_org(
            scripts, pool, name, by_org.get(name, []), wait_seconds=wait_seconds
        )
        out += found
    if out:
        log.warning("ledger.reconcile_differences", count=len(out), first=out[0].to_dict())
    return out


@dataclass
class ReconcileResult:
    """The last periodic comparison of Redis counters with the ledger (for metrics)."""

    runs: int = 0
    last_run_unix: float = 0.0
    differences: list[Difference] = field(default_factory=list)

    async def run(self, scripts: Scripts, pool: asyncpg.Pool, *, wait_seconds: float) -> None:
        self.differences = await compare(scripts, pool, wait_seconds=wait_seconds)
        self.runs += 1
        self.last_run_unix = time.time()


USAGE = """usage: python -m budget_service.ledger.reconcile [--org ORG] [--rebuild] [--json]

Compare every budget's Redis counters (spent in the current period, holds) with the PostgreSQL
ledger and print each difference. Exit code 0: none; 1: differences found; 2: bad usage or
setting; 4: Redis or PostgreSQL unreachable.

  --org ORG   only this org
  --rebuild   instead of comparing, restore config, counters and reservations from the
              ledger (after Redis lost its data or missed writes); each org is fenced while
              it is rebuilt (its calls answer UNAVAILABLE and are retried)
  --json      print JSON instead of text

Reads REDIS_URL and DATABASE_URL (and IDEMPOTENCY_RETENTION_SECONDS) like the service.
"""


async def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--org")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    args = parser.parse_args(argv)
    if args.help:
        print(USAGE)
        return 0
    settings = Settings.from_env()
    logs.configure("error", "console", sys.stderr)  # differences are the output, not log lines
    if not settings.redis_url or not settings.database_url:
        print(
            "error: REDIS_URL and DATABASE_URL must be set (the service's stores)", file=sys.stderr
        )
        return 2
    client = store.connect(settings.redis_url, timeout_seconds=5.0, pool_size=4)
    scripts = store.Scripts(client)
    pool = await db.connect(settings.database_url, max_size=2)
    try:
        await scripts.load()
        await db.migrate(pool, "budget_service", record_prefix="")
        if args.rebuild:
            rebuilt = await _rebuild(scripts, pool, settings, args.org)
            if args.json:
                print(json.dumps([asdict(r) for r in rebuilt]))
            else:
                for r in rebuilt:
                    print(
                        f"{r.org}: {r.budgets} budgets, {r.holds} open holds restored,"
                        f" {r.ended} holds ended as the ledger says"
                    )
            return 0
        found = await compare(scripts, pool, org=args.org)
        if args.json:
            print(json.dumps([d.to_dict() for d in found]))
        elif not found:
            print("no differences: Redis counters equal the ledger")
        for d in [] if args.json else found:
            if d.counter == ENDED_TWICE:
                print(
                    f"{d.org}: the ledger ends {d.ledger_nanos} reservations twice (a Redis that"
                    " lost writes ended them again); each counts once, in its final state"
                )
                continue
            if d.counter == LOST_WRITES:
                print(
                    f"{d.org}: the ledger has {d.ledger_nanos} events Redis's outbox never"
                    f" had (Redis lost writes): rebuild with --rebuild --org {d.org}"
                )
                continue
            print(
                f"{d.org}/{d.budget_id} (uid {d.budget_uid}) {d.counter}:"
                f" redis {d.redis_nanos} != ledger {d.ledger_nanos}"
            )
        return 1 if found else 0
    finally:
        scripts.close()
        await client.aclose()
        await pool.close()


async def _rebuild(
    scripts: Scripts, pool: asyncpg.Pool, settings: Settings, org: str | None
) -> list[Rebuilt]:
    epoch = await epochs.load(pool)
    rebuilder = Rebuilder(
        scripts, pool, SystemClock(), epoch=epoch.value,
        retention_ms=int(settings.retention_seconds * 1000),
        window_ms=int((settings.retention_seconds + settings.max_ttl_seconds) * 1000),
        enabled=True,
    )  # fmt: skip
    orgs = [org] if org is not None else await active_orgs(pool, rebuilder.window_ms)
    done = [r for name in orgs if (r := await rebuilder.rebuild(name, force=True)) is not None]
    if org is None:
        await redis_call(scripts.client.set(keys.EPOCH, epoch.value))
    return done


def run(argv: list[str]) -> int:
    """Run the command; answers its exit code (0 equal, 1 differences, 2 usage, 4 unreachable)."""
    try:
        return asyncio.run(_main(argv))
    except Unavailable as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 4
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
