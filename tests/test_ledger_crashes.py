"""The ledger across crashes: a killed service, PostgreSQL down, Redis restarted or flushed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import duration_pb2

from budget_service import server
from budget_service.hotpath import keys, store
from budget_service.ledger import reconcile
from devstack import PostgresProcess, RedisProcess, free_port
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.conftest import Stack, service_settings
from tests.helpers import rid, status, upsert, usd
from tests.test_service_process import wait_serving

TTL_SECONDS = 2
BUDGETS = ("cap", "team-0", "team-1")


@dataclass
class Seen:
    """What the load's client saw succeed."""

    reserved: dict[str, int] = field(default_factory=dict)  # reservation -> held
    committed: dict[str, int] = field(default_factory=dict)  # reservation -> charged
    refunded: dict[str, tuple[str, int]] = field(default_factory=dict)  # refund -> (res, amount)
    failures: list[str] = field(default_factory=list)


async def run_load(
    stub: budget_pb2_grpc.BudgetServiceStub, org: str, stop: asyncio.Event, seen: Seen,
    workers: int = 8,
) -> None:  # fmt: skip
    """Reserve / commit / refund in `workers` loops until `stop` (each loop bounded)."""

    async def worker(w: int) -> None:
        for i in range(20_000):
            if stop.is_set():
                return
            r = rid(f"w{w}")
            amount = 1_000 + (i % 7) * 100
            try:
                held = await stub.Reserve(pb.ReserveRequest(
                    reservation_id=r, subject=pb.Subject(org=org, team=f"t{w % 2}"),
                    amount_nanos=amount, ttl=duration_pb2.Duration(seconds=TTL_SECONDS)),
                    timeout=2)  # fmt: skip
                seen.reserved[r] = held.reserved_nanos
                done = await stub.Commit(
                    pb.CommitRequest(org=org, reservation_id=r, actual_nanos=amount - 100),
                    timeout=2,
                )
                seen.committed[r] = done.charged_nanos
                if i % 3 == 0:
                    refund_id = rid("rf")
                    got = await stub.Refund(pb.RefundRequest(
                        org=org, reservation_id=r, refund_id=refund_id, amount_nanos=50),
                        timeout=2)  # fmt: skip
                    seen.refunded[refund_id] = (r, got.refunded_nanos)
            except grpc.aio.AioRpcError as exc:
                seen.failures.append(exc.code().name)
                await asyncio.sleep(0.02)

    await asyncio.gather(*(worker(w) for w in range(workers)))


async def setup_budgets(admin: budget_pb2_grpc.BudgetAdminServiceStub, org: str) -> None:
    await upsert(admin, org, "cap", usd("1000"))
    for t in (0, 1):
        await upsert(admin, org, f"team-{t}", usd("1000"), selector={"team": f"t{t}"})


async def check_ledger_matches(pool, org: str, seen: Seen) -> None:  # type: ignore[no-untyped-def]
    """Every call the client saw succeed is in the ledger exactly once, with its amount."""
    rows = await pool.fetch(
        "SELECT type, reservation_id, refund_id, amount_nanos FROM ledger_events WHERE org = $1",
        org,
    )
    by_key: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        key = (r["type"], r["refund_id"] or r["reservation_id"])
        by_key.setdefault(key, []).append(r["amount_nanos"])
    for res, held in seen.reserved.items():
        assert by_key.get(("reserve", res)) == [held], res
    for res, charged in seen.committed.items():
        assert by_key.get(("commit", res)) == [charged], res
    for refund_id, (_res, amount) in seen.refunded.items():
        assert by_key.get(("refund", refund_id)) == [amount], refund_id
    assert all(len(amounts) == 1 for amounts in by_key.values())


async def wait_reconciled(scripts: store.Scripts, pool, org: str) -> None:  # type: ignore[no-untyped-def]
    """Counters equal the ledger once the writer caught up (bounded)."""
    found = await reconcile.compare(scripts, pool, org=org, wait_seconds=60)
    assert found == [], found


async def wait_holds_gone(admin: budget_pb2_grpc.BudgetAdminServiceStub, org: str) -> None:
    for _ in range(100):
        reserved = [(await status(admin, org, b)).reserved_nanos for b in BUDGETS]
        if reserved == [0, 0, 0]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"holds still open: {reserved}")


@pytest.fixture
def service_env(stack: Stack, pricing_app) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": stack.redis.url,
        "DATABASE_URL": stack.postgres.url,
        "BUDGET_ADDR": f"127.0.0.1:{free_port()}",
        "METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "PRICING_ADDR": f"127.0.0.1:{pricing_app.port}",  # SERVING needs its prices loaded
        "LOG_LEVEL": "error",
        "LEDGER_POLL_SECONDS": "0.05",
        # the killed writer's read-but-unacknowledged events are claimed by the restarted one
        "LEDGER_CLAIM_IDLE_SECONDS": "2",
        "SWEEP_INTERVAL_SECONDS": "0.2",
    }


async def test_kill_9_under_load_loses_nothing_and_counts_nothing_twice(
    service_env, app, admin, org
):
    addr = service_env["BUDGET_ADDR"]
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "budget_service"], env=service_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        procs.append(proc)
        return proc

    try:
        first = spawn()
        await wait_serving(addr, first)
        await setup_budgets(admin, org)
        seen = Seen()
        stop = asyncio.Event()
        async with grpc.aio.insecure_channel(addr) as ch:
            load = asyncio.create_task(run_load(budget_pb2_grpc.BudgetServiceStub(ch), org, stop,
                                                seen))  # fmt: skip
            for _ in range(100):  # until the load is well under way (bounded)
                if len(seen.committed) >= 200:
                    break
                await asyncio.sleep(0.05)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            await asyncio.sleep(0.3)  # calls fail while it is down
            second = spawn()
            await wait_serving(addr, second)
            await asyncio.sleep(0.5)  # and succeed again after the restart
            stop.set()
            await load
        assert len(seen.committed) >= 200 and seen.failures, (len(seen.committed), seen.failures)
        # Holds of calls cut off by the kill expire (TTL 2 s), and everything reconciles.
        await wait_holds_gone(admin, org)
        await wait_reconciled(app.engine.scripts, app.pool, org)
        await check_ledger_matches(app.pool, org, seen)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
async def own_stores(tmp_path) -> AsyncIterator[tuple[RedisProcess, PostgresProcess]]:
    """A Redis and a PostgreSQL only this test uses, so it can stop and flush them."""
    redis = RedisProcess(tmp_path / "redis", free_port())
    postgres = PostgresProcess(tmp_path / "pg", free_port(), fsync=False)
    redis.start()
    postgres.start()
    try:
        yield redis, postgres
    finally:
        postgres.stop()
        redis.stop()


@pytest.fixture
async def isolated_app(own_stores, stack) -> AsyncIterator[tuple]:
    redis, postgres = own_stores
    app = await server.start(service_settings(
        Stack(redis, postgres), pricing_addr=f"127.0.0.1:{free_port()}",
        ledger_poll_seconds=0.05, redis_timeout_seconds=1.0))  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            yield (app, redis, postgres, budget_pb2_grpc.BudgetServiceStub(ch),
                   budget_pb2_grpc.BudgetAdminServiceStub(ch))  # fmt: skip
    finally:
        await app.stop()


async def test_postgres_down_under_load_fails_no_call_and_the_backlog_drains(isolated_app, org):
    app, _redis, postgres, budgets, admin = isolated_app
    await setup_budgets(admin, org)
    seen = Seen()
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(budgets, org, stop, seen, workers=4))
    await asyncio.sleep(0.3)
    postgres.stop()
    await asyncio.sleep(1.5)  # traffic goes on; the outbox grows
    backlog = app.ledger.stats.backlog_events
    postgres.start()
    started = time.monotonic()
    await asyncio.sleep(0.5)
    stop.set()
    await load
    assert seen.failures == [], seen.failures[:5]
    assert backlog > 0 and app.ledger.stats.failures > 0
    await wait_reconciled(app.engine.scripts, app.pool, org)
    drained = time.monotonic() - started
    await check_ledger_matches(app.pool, org, seen)
    # PostgreSQL down is no event's fault: retried, nothing set aside, no org blamed.
    assert await app.pool.fetchval("SELECT count(*) FROM ledger_dead_letters") == 0
    assert (app.ledger.stats.dead_lettered, app.ledger.failing) == (0, {})
    print(f"\nbacklog {backlog} events when PostgreSQL returned; drained in {drained:.2f}s")


async def test_redis_restart_keeps_counters_and_a_flush_is_rebuilt_from_the_ledger(
    isolated_app, org
):
    app, redis, _postgres, budgets, admin = isolated_app
    await setup_budgets(admin, org)
    seen = Seen()
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(budgets, org, stop, seen, workers=4))
    await asyncio.sleep(0.5)
    stop.set()
    await load
    open_hold = await budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid("open"), subject=pb.Subject(org=org, team="t1"),
        amount_nanos=usd("0.5"), ttl=duration_pb2.Duration(seconds=600)))  # fmt: skip
    await wait_reconciled(app.engine.scripts, app.pool, org)
    before = {b: await status(admin, org, b) for b in BUDGETS}
    assert before["team-1"].reserved_nanos == usd("0.5")

    redis.stop()  # graceful: the AOF is complete
    redis.start()
    after_restart = {b: await status(admin, org, b) for b in BUDGETS}
    assert after_restart == before
    await wait_reconciled(app.engine.scripts, app.pool, org)

    await app.redis.flushall()
    # The service notices that Redis lost its data set (the sentinel is gone) and rebuilds
    # every org from the ledger by itself, failing closed meanwhile.
    for _ in range(200):
        if await app.redis.get(keys.EPOCH) is not None and not app.engine.data_set_lost:
            break
        await asyncio.sleep(0.05)
    assert await app.redis.get(keys.EPOCH) is not None, "the data set was never rebuilt"
    assert app.rebuilder.rebuilt >= 1
    # By hand (budgetctl reconcile --rebuild): the same counters and holds again.
    rebuilt = await app.rebuilder.rebuild(org, force=True)
    assert rebuilt is not None and (rebuilt.budgets, rebuilt.holds) == (3, 1)
    rebuilt_status = {b: await status(admin, org, b) for b in BUDGETS}
    for b in BUDGETS:
        got, want = rebuilt_status[b], before[b]
        assert (got.spent_nanos, got.reserved_nanos) == (want.spent_nanos, want.reserved_nanos)
    await wait_reconciled(app.engine.scripts, app.pool, org)
    # The restored hold is live: it commits, and the ledger records it.
    done = await budgets.Commit(pb.CommitRequest(org=org, reservation_id=open_hold.reservation_id,
                                                 actual_nanos=usd("0.2")))  # fmt: skip
    assert (done.charged_nanos, done.released_nanos) == (usd("0.2"), usd("0.3"))
    await wait_reconciled(app.engine.scripts, app.pool, org)
