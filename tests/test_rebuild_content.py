"""A rebuild from the ledger restores the right content: each reservation counted once in its
final state, the records of reservations that ended within the retention window, and an org of
any size (restored in bounded calls while it stays fenced).

Runs a budget service on a Redis and a PostgreSQL of this module's own (the fixtures of
test_data_loss.py), so it can flush and rewind them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2

from budget_service.hotpath import keys
from budget_service.hotpath.store import Scripts
from budget_service.hotpath.sweeper import Sweeper
from budget_service.ledger import reconcile
from budget_service.ledger.progress import last_event_id, wait_written
from budget_service.ledger.recovery import rebuild_org
from genproto.budget.v1 import budget_pb2 as pb
from tests import test_data_loss as data_loss
from tests.helpers import reserve, rid, status, upsert, usd
from tests.test_data_loss import Service, _dump, _restore, commit, refused_code, written

# the module's own Redis and PostgreSQL, and a service without automatic rebuilds
stores = data_loss.stores
manual = data_loss.manual


async def drained(service: Service, org: str) -> None:
    """The ledger has every event the org's outbox holds (whatever Redis's counters say)."""
    redis = service.app.redis
    await wait_written(redis, org, await last_event_id(redis, org), 30)


async def lose_org(url: str, org: str) -> None:
    """Every key of the org is gone (a Redis that lost its data, for this org)."""
    client = aioredis.Redis.from_url(url)
    try:
        names = [k async for k in client.scan_iter(match=f"ba:{{{org}}}:*")]
        if names:
            await client.delete(*names)
    finally:
        await client.aclose()


async def test_a_commit_and_an_expire_of_one_hold_are_counted_once_by_the_rebuild(
    manual, stores, clock, org
):
    s = manual
    await upsert(s.admin, org, "cap", usd("1.00"))
    held = await s.budgets.Reserve(pb.ReserveRequest(
        reservation_id=rid("c"), subject=pb.Subject(org=org), amount_nanos=usd("0.40"),
        ttl=duration_pb2.Duration(seconds=60)))  # fmt: skip
    await written(s.app, org)
    before_commit = await _dump(stores.redis.url, org)  # the replica that will be promoted

    await commit(s, org, held.reservation_id, usd("0.30"))
    await written(s.app, org)  # the ledger has the commit ...
    await _restore(stores.redis.url, org, before_commit)  # ... the promoted Redis does not
    # The sweeper runs before anyone rebuilds: the hold Redis thinks open is expired, and the
    # ledger gets an expire of the reservation it already has a commit of.
    try:
        clock.set_ms(held.expires_at.ToMilliseconds() + 1_000)
        await Sweeper(s.app.redis, s.app.engine, clock).sweep_once()
    finally:
        clock.offset_ms = 0
    await drained(s, org)
    types = await s.app.pool.fetch(
        "SELECT type FROM ledger_events WHERE org = $1 AND reservation_id = $2 ORDER BY type",
        org, held.reservation_id,
    )  # fmt: skip
    assert [r["type"] for r in types] == ["commit", "expire", "reserve"]

    found = await reconcile.compare(s.app.engine.scripts, s.app.pool, org=org)
    assert (reconcile.ENDED_TWICE, 0, 1) in [
        (d.counter, d.redis_nanos, d.ledger_nanos) for d in found
    ]

    rebuilt = await s.app.rebuilder.rebuild(org, force=True)
    assert rebuilt is not None
    st = await status(s.admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.30"), 0)
    # the counters agree with the ledger now; that it ended the reservation twice is still told
    found = await reconcile.compare(s.app.engine.scripts, s.app.pool, org=org)
    assert [(d.counter, d.ledger_nanos) for d in found] == [(reconcile.ENDED_TWICE, 1)]
    over = await refused_code(reserve(s.budgets, org, usd("1.00") - usd("0.30") + 1))
    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await reserve(s.budgets, org, usd("0.70"))  # exactly the room left
    # a retried commit answers what the first one did, and charges nothing more
    again = await commit(s, org, held.reservation_id, usd("0.30"))
    assert (again.charged_nanos, again.released_nanos) == (usd("0.30"), usd("0.10"))
    st = await status(s.admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.30"), usd("0.70"))


async def test_a_commit_retried_after_a_total_loss_answers_as_the_first_and_can_be_refunded(
    manual, org
):
    s = manual
    await upsert(s.admin, org, "cap", usd("1.00"))
    held = await reserve(s.budgets, org, usd("0.40"))
    first = await commit(s, org, held.reservation_id, usd("0.30"))
    await written(s.app, org)

    await s.app.redis.flushall()
    await s.app.rebuilder.rebuild_all()

    again = await commit(s, org, held.reservation_id, usd("0.30"))
    assert (again.charged_nanos, again.released_nanos, again.late) == (
        first.charged_nanos,
        first.released_nanos,
        first.late,
    )
    assert (first.charged_nanos, first.released_nanos) == (usd("0.30"), usd("0.10"))
    st = await status(s.admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.30"), 0), "charged once"
    # a retried Reserve of it answers as a duplicate, not as a new hold
    dup = await reserve(s.budgets, org, usd("0.40"), reservation_id=held.reservation_id)
    assert dup.reservation_id == held.reservation_id
    assert (await status(s.admin, org, "cap")).reserved_nanos == 0

    refunded = await s.budgets.Refund(pb.RefundRequest(
        org=org, reservation_id=held.reservation_id, refund_id="rf-1",
        amount_nanos=usd("0.10")))  # fmt: skip
    assert refunded.refunded_nanos == usd("0.10")
    st = await status(s.admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (usd("0.20"), 0)
    await written(s.app, org)


async def test_a_refund_and_a_release_retried_after_a_total_loss_answer_as_the_first(manual, org):
    s = manual
    await upsert(s.admin, org, "cap", usd("1.00"))
    charged = await reserve(s.budgets, org, usd("0.50"))
    await commit(s, org, charged.reservation_id, usd("0.50"))
    gave = await s.budgets.Refund(pb.RefundRequest(
        org=org, reservation_id=charged.reservation_id, refund_id="rf-1",
        amount_nanos=usd("0.20")))  # fmt: skip
    voided = await reserve(s.budgets, org, usd("0.25"))
    released = await s.budgets.Release(
        pb.ReleaseRequest(org=org, reservation_id=voided.reservation_id)
    )
    await written(s.app, org)

    await s.app.redis.flushall()
    await s.app.rebuilder.rebuild_all()

    again = await s.budgets.Refund(pb.RefundRequest(
        org=org, reservation_id=charged.reservation_id, refund_id="rf-1",
        amount_nanos=usd("0.20")))  # fmt: skip
    assert again.refunded_nanos == gave.refunded_nanos == usd("0.20")
    retried = await s.budgets.Release(
        pb.ReleaseRequest(org=org, reservation_id=voided.reservation_id)
    )
    assert retried.released_nanos == released.released_nanos == usd("0.25")
    # the rest of the charge can still be refunded, once
    rest = await s.budgets.Refund(pb.RefundRequest(
        org=org, reservation_id=charged.reservation_id, refund_id="rf-2",
        amount_nanos=usd("0.50")))  # fmt: skip
    assert rest.refunded_nanos == usd("0.30")
    st = await status(s.admin, org, "cap")
    assert (st.spent_nanos, st.reserved_nanos) == (0, 0)
    await written(s.app, org)


class WatchedScripts:
    """The service's scripts, with a look at each restore call before it runs."""

    def __init__(
        self, inner: Scripts, before: Callable[[list[str], list[Any]], Awaitable[None]]
    ) -> None:
        self.inner = inner
        self.client = inner.client
        self.before = before
        self.restore_keys: list[int] = []  # per restore call: how many keys it carried

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        if name == "restore":
            await self.before(keys, args)
            self.restore_keys.append(len(keys))
        return await self.inner.run(name, keys, args)


async def _org_state(url: str, org: str) -> dict[str, Any]:
    """What the org holds in Redis, without what differs between two rebuilds by design (the
    config version, the outbox stream, the change log, TTLs)."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        state: dict[str, Any] = {}
        async for name in client.scan_iter(match=f"ba:{{{org}}}:*"):
            kind = await client.type(name)
            if kind == "hash":
                value = await client.hgetall(name)
                if name == keys.config(org):
                    value = {f: v for f, v in value.items() if f not in ("_v", "_f")}
                state[name] = value
            elif kind == "zset":
                state[name] = await client.zrange(name, 0, -1, withscores=True)
        return state
    finally:
        await client.aclose()


async def test_an_org_with_more_budgets_than_one_call_is_restored_in_chunks_while_fenced(
    manual, stores, clock, org
):
    s = manual
    users = 120
    await upsert(s.admin, org, "all", usd("1000"))
    for i in range(users):
        await upsert(s.admin, org, f"u{i}", usd("1.00"), selector={"user": f"u{i}"})
    spent: dict[str, int] = {}
    holds: dict[str, int] = {}
    for i in range(0, users, 3):  # a charge on every third user, a hold on the next
        amount = usd("0.01") * (i % 50 + 1)
        held = await reserve(s.budgets, org, amount + usd("0.05"), user=f"u{i}")
        await commit(s, org, held.reservation_id, amount)
        spent[f"u{i}"] = amount
        holds[f"u{i + 1}"] = usd("0.02") * (i % 40 + 1)
        await reserve(s.budgets, org, holds[f"u{i + 1}"], user=f"u{i + 1}")
    await written(s.app, org)
    scripts = s.app.engine.scripts
    epoch = s.app.rebuilder.epoch
    retention_ms = s.app.rebuilder.retention_ms

    async def no_look(keys: list[str], args: list[Any]) -> None:
        return None

    probes: list[grpc.StatusCode] = []

    async def probe(keys: list[str], args: list[Any]) -> None:
        """Before each call but the first, the calls before it have left the org fenced."""
        if chunked.restore_keys:
            refused = await refused_code(reserve(s.budgets, org, usd("0.01"), user="u2"))
            probes.append(refused.code())

    await lose_org(stores.redis.url, org)
    one = WatchedScripts(scripts, no_look)
    await rebuild_org(one, s.app.pool, org, clock, epoch=epoch, retention_ms=retention_ms,
                      chunk=1_000_000)  # fmt: skip
    in_one_call = await _org_state(stores.redis.url, org)
    assert len(one.restore_keys) == 1

    await lose_org(stores.redis.url, org)
    chunked = WatchedScripts(scripts, probe)
    rebuilt = await rebuild_org(chunked, s.app.pool, org, clock, epoch=epoch,
                                retention_ms=retention_ms, chunk=50)  # fmt: skip
    assert (rebuilt.budgets, rebuilt.holds) == (users + 1, len(holds))
    in_chunks = await _org_state(stores.redis.url, org)
    assert in_chunks == in_one_call
    fixed_keys = 4  # config, expiries, outbox, change log
    assert len(chunked.restore_keys) >= 3
    assert max(chunked.restore_keys) <= fixed_keys + 50
    assert probes == [grpc.StatusCode.UNAVAILABLE] * (len(chunked.restore_keys) - 1)

    # what the ledger says, counted here
    for i in (0, 1, 2, 3, 4, 117, 118, 119):
        st = await status(s.admin, org, f"u{i}")
        want = (spent.get(f"u{i}", 0), holds.get(f"u{i}", 0))
        assert (st.spent_nanos, st.reserved_nanos) == want, f"u{i}"
    st = await status(s.admin, org, "all")
    assert (st.spent_nanos, st.reserved_nanos) == (sum(spent.values()), sum(holds.values()))
    refused = await refused_code(reserve(s.budgets, org, usd("1.00") - spent["u0"] + 1, user="u0"))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await written(s.app, org)


@pytest.mark.parametrize("chunk", [1, 7])
async def test_a_rebuild_in_small_chunks_restores_ended_reservations_too(
    manual, stores, clock, org, chunk
):
    s = manual
    await upsert(s.admin, org, "cap", usd("5.00"))
    ids = []
    for i in range(10):
        held = await reserve(s.budgets, org, usd("0.20"))
        await commit(s, org, held.reservation_id, usd("0.01") * (i + 1))
        ids.append(held.reservation_id)
    await written(s.app, org)
    await lose_org(stores.redis.url, org)
    rebuilt = await rebuild_org(s.app.engine.scripts, s.app.pool, org, clock,
                                epoch=s.app.rebuilder.epoch,
                                retention_ms=s.app.rebuilder.retention_ms, chunk=chunk)  # fmt: skip
    assert rebuilt.budgets == 1
    for i, reservation_id in enumerate(ids):
        again = await commit(s, org, reservation_id, usd("0.01") * (i + 1))
        assert again.charged_nanos == usd("0.01") * (i + 1)
    assert (await status(s.admin, org, "cap")).spent_nanos == usd("0.55")
