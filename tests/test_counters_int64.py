"""The scripts read, compare and add any int64 counter exactly, negative ones included.

Counters are int64 nano-USD in Redis; Lua numbers are doubles. lib.lua keeps a counter as a
(high, low) pair. A rebuild from a ledger ahead of Redis, or a refund of a charge the counter
never saw, can leave a counter below zero: the scripts must still decide exactly.
"""

from __future__ import annotations

import json
import random
from importlib import resources

import grpc
import pytest

from budget_service.hotpath import keys
from genproto.budget.v1 import budget_pb2 as pb
from tests.helpers import error_info, reserve, rid, status, upsert

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Evaluates lib.lua's helpers on the values in ARGV: for each value, big_str(big(v)); for each
# pair, big_str(big_add(a, b)), big_str(big_sub(a, b)) and big_gt(a, b).
HARNESS = """
local out = {}
for i = 1, #ARGV, 2 do
  local a, b = big(ARGV[i]), big(ARGV[i + 1])
  out[#out + 1] = {big_str(a), big_str(b), big_str(big_add(a, b)), big_str(big_sub(a, b)),
                   big_gt(a, b) and 1 or 0}
end
return cjson.encode(out)
"""

EDGES = [
    0, 1, -1, 9, -9, 999_999_999, -999_999_999, 10**9, -(10**9), 10**9 + 1, -(10**9) - 1,
    500_000_000, -500_000_000, 1_500_000_000, -1_500_000_000, 2**53, -(2**53), 2**53 + 1,
    -(2**53) - 1, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1, 10**18, -(10**18),
]  # fmt: skip


def _pairs() -> list[tuple[int, int]]:
    rng = random.Random(20261204)
    values = EDGES + [rng.randint(INT64_MIN, INT64_MAX) for _ in range(300)]
    values += [rng.randint(-(10**12), 10**12) for _ in range(300)]
    pairs = [(a, b) for a in EDGES for b in EDGES]
    pairs += [(rng.choice(values), rng.choice(values)) for _ in range(2000)]
    return pairs


async def test_lua_helpers_are_exact_for_every_int64_negative_included(app):
    pairs = _pairs()
    source = (resources.files("budget_service.hotpath") / "scripts" / "lib.lua").read_text()
    results = []
    for start in range(0, len(pairs), 400):  # bounded ARGV per call
        chunk = pairs[start : start + 400]
        args = [str(v) for pair in chunk for v in pair]
        results += json.loads(await app.redis.eval(source + HARNESS, 0, *args))
    assert len(results) == len(pairs)
    for (a, b), (a_s, b_s, total, difference, greater) in zip(pairs, results, strict=True):
        assert (int(a_s), int(b_s)) == (a, b)
        assert a_s == str(a), "big_str writes the canonical decimal form"
        assert int(total) == a + b, (a, b)
        assert int(difference) == a - b, (a, b)
        assert bool(greater) == (a > b), (a, b)


@pytest.mark.parametrize(
    ("reserved", "room"),
    [
        ("-500000000", 1_500_000_000),  # once unreadable: the script failed (INTERNAL)
        ("-1500000000", 2_500_000_000),  # once misread as -500000000: less room than there is
        ("-9223372036854775808", None),  # the lowest int64: room beyond any one request
    ],
)
async def test_reserve_decides_exactly_on_a_negative_hold_counter(
    app, budgets, admin, org, reserved, room
):
    await upsert(admin, org, "cap", 1_000_000_000)
    uid = (await app.engine.cache.refresh(org)).budgets[0].uid
    await app.redis.hset(keys.budget(org, uid), "reserved", reserved)
    if room is None:
        held = await reserve(budgets, org, app.settings.max_amount_nanos)
        assert held.reserved_nanos == app.settings.max_amount_nanos
        return
    held = await reserve(budgets, org, room)  # exactly the room left: admitted
    assert held.budgets[0].reserved_nanos == int(reserved) + room
    assert held.budgets[0].remaining_nanos == 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, 1)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await status(admin, org, "cap")).reserved_nanos == int(reserved) + room


# A counter pushed to the edge of int64 (fault injection: no API call gets one there), on the
# second of two budgets covering the request, so that a script writing budget by budget would
# already have changed the first when Redis refuses the second's HINCRBY.
NEAR_MAX, NEAR_MIN = str(INT64_MAX - 10), str(INT64_MIN + 10)
COUNTERS = ("spent", "reserved", "ovr")


async def _two_budgets(app, admin, org) -> dict[str, str]:
    """A hard cap and a soft budget over the whole org (in that order): their state hash keys."""
    await upsert(admin, org, "a-cap", 1_000_000_000, mode=pb.MODE_HARD)
    await upsert(admin, org, "b-soft", 1_000_000_000, mode=pb.MODE_SOFT)
    found = (await app.engine.cache.refresh(org)).budgets
    return {b.id: keys.budget(org, b.uid) for b in found}


async def _counters(app, budget_keys: dict[str, str]) -> dict[str, list[str | None]]:
    return {b: await app.redis.hmget(key, *COUNTERS) for b, key in budget_keys.items()}


async def _refused_as_overflow(call, counter: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION, failed.value
    info = error_info(failed.value)
    assert (info.reason, info.metadata["budget_id"], info.metadata["counter"]) == (
        "COUNTER_OVERFLOW",
        "b-soft",
        counter,
    )


async def test_reserve_past_int64_on_one_budget_changes_no_budget(app, budgets, admin, org):
    budget_keys = await _two_budgets(app, admin, org)
    await app.redis.hset(budget_keys["b-soft"], "reserved", NEAR_MAX)
    before = await _counters(app, budget_keys)
    reservation_id = rid()

    await _refused_as_overflow(reserve(budgets, org, 100, reservation_id), "reserved")
    assert await _counters(app, budget_keys) == before
    assert await app.redis.exists(keys.reservation(org, reservation_id)) == 0
    # nothing held: the hard cap still has all its room
    await app.redis.hset(budget_keys["b-soft"], "reserved", "0")
    held = await reserve(budgets, org, 1_000_000_000)
    assert [b.reserved_nanos for b in held.budgets] == [1_000_000_000, 1_000_000_000]


@pytest.mark.parametrize(
    ("counter", "value", "spent_before"),
    [
        ("spent", NEAR_MAX, None),  # the charge would carry spent past the top
        ("reserved", NEAR_MIN, None),  # giving the hold back would carry reserved past the bottom
        ("ovr", NEAR_MAX, "1000000000"),  # over the limit: the overage record would overflow
    ],
)
async def test_commit_past_int64_on_one_budget_changes_no_budget(
    app, budgets, admin, org, counter, value, spent_before
):
    budget_keys = await _two_budgets(app, admin, org)
    held = await reserve(budgets, org, 100)
    fields = {counter: value}
    if spent_before is not None:
        fields["spent"] = spent_before
    await app.redis.hset(budget_keys["b-soft"], mapping=fields)
    before = await _counters(app, budget_keys)
    request = pb.CommitRequest(org=org, reservation_id=held.reservation_id, actual_nanos=100)

    await _refused_as_overflow(budgets.Commit(request), counter)
    assert await _counters(app, budget_keys) == before
    state = await app.redis.hget(keys.reservation(org, held.reservation_id), "state")
    assert state == "held"  # still held: it can be released (or committed once mended)
    release = pb.ReleaseRequest(org=org, reservation_id=held.reservation_id)
    if counter == "reserved":  # giving the hold back would overflow the same way
        await _refused_as_overflow(budgets.Release(release), counter)
        assert await _counters(app, budget_keys) == before
        await app.redis.hset(budget_keys["b-soft"], "reserved", "100")
    assert (await budgets.Release(release)).released_nanos == 100


async def test_refund_past_int64_on_one_budget_changes_no_budget(app, budgets, admin, org):
    budget_keys = await _two_budgets(app, admin, org)
    held = await reserve(budgets, org, 100)
    await budgets.Commit(
        pb.CommitRequest(org=org, reservation_id=held.reservation_id, actual_nanos=100)
    )
    await app.redis.hset(budget_keys["b-soft"], "spent", NEAR_MIN)
    before = await _counters(app, budget_keys)
    request = pb.RefundRequest(
        org=org, reservation_id=held.reservation_id, refund_id="rf-1", amount_nanos=50
    )

    await _refused_as_overflow(budgets.Refund(request), "spent")
    assert await _counters(app, budget_keys) == before
    # the refund id was not used up: once the counter is mended, the same refund goes through
    await app.redis.hset(budget_keys["b-soft"], "spent", "100")
    assert (await budgets.Refund(request)).refunded_nanos == 50
    assert await _counters(app, budget_keys) == {
        "a-cap": ["50", "0", None],
        "b-soft": ["50", "0", None],
    }
