"""Reconciliation: Redis counters against the PostgreSQL ledger, and the rebuild of Redis from it.

`compare` snapshots an org's counters and the id of its newest ledger event atomically
(scripts/snapshot.lua), waits until the ledger writer has written every event up to that id,
and sums the ledger's effects up to that id: spent per budget for the period Redis counts, holds
per budget over all time. Any difference is reported; there should be none.

`rebuild` restores counters and open holds from the ledger after Redis lost its data (a flush,
a replica promoted without the latest writes). Run it with traffic stopped:
`python -m budget_service.ledger.reconcile --rebuild`.
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

from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import keys, store
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.periods import bounds_ms
from budget_service.hotpath.store import Scripts, redis_call
from budget_service.ledger.writer import GROUP
from servicekit import db, logs
from servicekit.clock import Clock, SystemClock
from servicekit.errors import ServiceError, Unavailable
from servicekit.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Difference:
    """A counter whose Redis value is not what the ledger sums to."""

    org: str
    budget_id: str
    budget_uid: int
    counter: str  # "spent" or "reserved"
    redis_nanos: int
    ledger_nanos: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


LEDGER_SUMS = """
SELECT f.budget_uid,
       coalesce(sum(f.spent_delta) FILTER (WHERE f.period_start_ms = p.pstart), 0) AS spent,
       coalesce(sum(f.reserved_delta), 0) AS reserved
FROM ledger_effects f
JOIN ledger_events e ON e.org = f.org AND e.event_id = f.event_id
JOIN unnest($2::bigint[], $3::bigint[]) AS p(uid, pstart) ON p.uid = f.budget_uid
WHERE f.org = $1
  AND (split_part(e.stream_id, '-', 1)::bigint, split_part(e.stream_id, '-', 2)::bigint)
      <= ($4::bigint, $5::bigint)
GROUP BY f.budget_uid
"""

# Reservations with a reserve event and no ending one. A reservation's events share its
# (org, reservation_id, created_ms): an id reused after the first one was forgotten is another
# reservation. A hold moved by `extend` expires at the latest extend's time.
OPEN_HOLDS = """
SELECT r.reservation_id, r.amount_nanos, r.budget_uids,
       coalesce((SELECT x.expires_at_ms FROM ledger_events x
                 WHERE x.org = r.org AND x.reservation_id = r.reservation_id
                   AND x.created_ms = r.created_ms AND x.type = 'extend'
                 ORDER BY x.at DESC, x.expires_at_ms DESC LIMIT 1),
                r.expires_at_ms) AS expires_at_ms,
       r.at, r.price_ref, r.fingerprint, r.subject
FROM ledger_events r
WHERE r.org = $1 AND r.type = 'reserve'
  AND NOT EXISTS (
      SELECT 1 FROM ledger_events x
      WHERE x.org = r.org AND x.reservation_id = r.reservation_id
        AND x.created_ms = r.created_ms AND x.type IN ('commit', 'release', 'expire'))
ORDER BY r.reservation_id
"""


async def _wait_written(scripts: Scripts, org: str, last_id: str, wait_seconds: float) -> None:
    """Wait until every event of `org` up to `last_id` is acknowledged by a ledger writer."""
    if last_id == "0-0":
        return
    stream = keys.ledger(org)
    deadline = time.monotonic() + wait_seconds
    client = scripts.client
    while True:
        groups = await redis_call(client.xinfo_groups(stream))
        group = next((g for g in groups if g["name"] == GROUP), None)
        if group is not None and _id_tuple(group["last-delivered-id"]) >= _id_tuple(last_id):
            pending = await redis_call(client.xpending_range(stream, GROUP, "-", last_id, 1))
            if not pending:
                return
        if time.monotonic() > deadline:
            raise Unavailable(
                f"the ledger writer has not written org {org!r}'s events up to {last_id} within"
                f" {wait_seconds:g}s (is a budget service with LEDGER_WRITER on running, and"
                " PostgreSQL up?)"
            )
        await asyncio.sleep(0.05)


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
    await _wait_written(scripts, org, last_id, wait_seconds)
    # No stream: no event since Redis lost its data (or ever), so every ledger event counts.
    ms, seq = _id_tuple(last_id) if last_id != "0-0" else (2**62, 0)
    pstarts = [int(s[2]) for s in states]
    rows = await pool.fetch(LEDGER_SUMS, org, [b.uid for b in budgets], pstarts, ms, seq)
    sums = {r["budget_uid"]: (int(r["spent"]), int(r["reserved"])) for r in rows}
    out = []
    for b, (spent, reserved, _pstart, _exists) in zip(budgets, states, strict=True):
        ledger_spent, ledger_reserved = sums.get(b.uid, (0, 0))
        for counter, in_redis, in_ledger in (
            ("spent", int(spent), ledger_spent),
            ("reserved", int(reserved), ledger_reserved),
        ):
            if in_redis != in_ledger:
                out.append(Difference(org, b.id, b.uid, counter, in_redis, in_ledger))
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


@dataclass(frozen=True)
class Rebuilt:
    org: str
    budgets: int
    holds: int


async def rebuild_org(
    scripts: Scripts,
    pool: asyncpg.Pool,
    org: str,
    budgets: list[BudgetConfig],
    clock: Clock,
    *,
    retention_ms: int,
) -> Rebuilt:
    """Set `org`'s counters and open holds in Redis to what the ledger says."""
    now = clock.now_ms()
    pstarts = [bounds_ms(b.period, b.timezone, now)[0] for b in budgets]
    uids = [b.uid for b in budgets]
    rows = await pool.fetch(LEDGER_SUMS, org, uids, pstarts, 2**62, 0)
    sums = {r["budget_uid"]: (int(r["spent"]), int(r["reserved"])) for r in rows}
    holds = await pool.fetch(OPEN_HOLDS, org)
    args: list[str | int] = [len(budgets), retention_ms, now]
    for b, pstart in zip(budgets, pstarts, strict=True):
        spent, reserved = sums.get(b.uid, (0, 0))
        args += [spent, reserved, pstart]
    for h in holds:
        subject = h["subject"] if isinstance(h["subject"], str) else json.dumps(h["subject"])
        args += [
            h["reservation_id"],
            h["amount_nanos"],
            ",".join(str(u) for u in h["budget_uids"]),
            h["expires_at_ms"],
            int(h["at"].timestamp() * 1000),
            h["price_ref"] or "0",
            h["fingerprint"],
            subject,
            json.dumps([str(h["amount_nanos"]), str(h["expires_at_ms"]), []]),
        ]
    reply = await scripts.run(
        "restore",
        [
            keys.expiries(org),
            *(keys.budget(org, u) for u in uids),
            *(keys.reservation(org, h["reservation_id"]) for h in holds),
        ],
        args,
    )
    await redis_call(scripts.client.sadd(keys.ORGS, org))
    result = Rebuilt(org, int(reply[1]), int(reply[2]))
    log.info("ledger.rebuilt", org=org, budgets=result.budgets, holds=result.holds)
    return result


async def rebuild(
    scripts: Scripts,
    pool: asyncpg.Pool,
    clock: Clock,
    *,
    retention_ms: int,
    org: str | None = None,
) -> list[Rebuilt]:
    """Restore configuration, counters and open holds of one org or all of them from PostgreSQL.

    Drain the ledger first (a running service's writer does), and stop traffic: counters are
    set to the ledger's sums, so an event not written yet would be lost from them.
    """
    repo = BudgetRepository(pool)
    await ConfigSync(scripts).reconcile(repo)
    by_org = await repo.all_by_org()
    orgs = [org] if org is not None else sorted(by_org)
    return [
        await rebuild_org(
            scripts, pool, name, by_org.get(name, []), clock, retention_ms=retention_ms
        )
        for name in orgs
    ]


USAGE = """usage: python -m budget_service.ledger.reconcile [--org ORG] [--rebuild] [--json]

Compare every budget's Redis counters (spent in the current period, holds) with the PostgreSQL
ledger and print each difference. Exit code 0: none; 1: differences found; 2: bad usage or
setting; 4: Redis or PostgreSQL unreachable.

  --org ORG   only this org
  --rebuild   instead of comparing, restore Redis counters and open holds from the ledger
              (after Redis lost its data; stop traffic first)
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
            rebuilt = await rebuild(
                scripts,
                pool,
                SystemClock(),
                retention_ms=int(settings.retention_seconds * 1000),
                org=args.org,
            )
            if args.json:
                print(json.dumps([asdict(r) for r in rebuilt]))
            else:
                for r in rebuilt:
                    print(f"{r.org}: {r.budgets} budgets, {r.holds} open holds restored")
            return 0
        found = await compare(scripts, pool, org=args.org)
        if args.json:
            print(json.dumps([d.to_dict() for d in found]))
        elif not found:
            print("no differences: Redis counters equal the ledger")
        for d in [] if args.json else found:
            print(
                f"{d.org}/{d.budget_id} (uid {d.budget_uid}) {d.counter}:"
                f" redis {d.redis_nanos} != ledger {d.ledger_nanos}"
            )
        return 1 if found else 0
    finally:
        scripts.close()
        await client.aclose()
        await pool.close()


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
