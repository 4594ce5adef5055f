"""Bad input is refused with INVALID_ARGUMENT / NOT_FOUND naming the field, and changes nothing."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from google.protobuf import duration_pb2

from genproto.budget.v1 import budget_pb2 as pb
from tests.helpers import bad_field, reserve, status, upsert, usd

ORG = "badinput-org"


def reserve_request(**overrides: object) -> pb.ReserveRequest:
    request = pb.ReserveRequest(
        reservation_id="bad-1", subject=pb.Subject(org=ORG), amount_nanos=usd("0.01")
    )
    for name, value in overrides.items():
        if name == "subject":
            request.subject.CopyFrom(value)  # type: ignore[arg-type]
        elif name == "ttl":
            request.ttl.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    return request


BAD_RESERVES = [
    ("missing org", reserve_request(subject=pb.Subject()), "subject.org"),
    ("missing reservation id", reserve_request(reservation_id=""), "reservation_id"),
    ("overlong reservation id", reserve_request(reservation_id="x" * 129), "reservation_id"),
    ("control character in id", reserve_request(reservation_id="a\nb"), "reservation_id"),
    (
        "brace in org breaks the hash tag",
        reserve_request(subject=pb.Subject(org="a}b")),
        "subject.org",
    ),
    ("negative amount", reserve_request(amount_nanos=-1), "amount_nanos"),
    ("absurd amount", reserve_request(amount_nanos=2**62), "amount_nanos"),
    (
        "no estimate",
        pb.ReserveRequest(reservation_id="bad-1", subject=pb.Subject(org=ORG)),
        "amount_nanos",
    ),
    ("unknown priority", reserve_request(priority=42), "priority"),
    ("ttl too short", reserve_request(ttl=duration_pb2.Duration(nanos=5_000_000)), "ttl"),
    ("ttl too long", reserve_request(ttl=duration_pb2.Duration(seconds=10**6)), "ttl"),
    ("negative ttl", reserve_request(ttl=duration_pb2.Duration(seconds=-5)), "ttl"),
    (
        "control character in user",
        reserve_request(subject=pb.Subject(org=ORG, user="u\x00")),
        "subject.user",
    ),
    (
        "empty tag name",
        reserve_request(subject=pb.Subject(org=ORG, tags={"": "x"})),
        "subject.tags",
    ),
    # Bounds are in UTF-8 bytes: 129 "é" are 129 characters but 258 bytes.
    (
        "user of 258 bytes",
        reserve_request(subject=pb.Subject(org=ORG, user="\u00e9" * 129)),
        "subject.user",
    ),
    (
        "team of 3 MB",
        reserve_request(subject=pb.Subject(org=ORG, team="t" * 3_000_000)),
        "subject.team",
    ),
    (
        "tag name of 65 bytes",
        reserve_request(subject=pb.Subject(org=ORG, tags={"k" * 65: "x"})),
        "subject.tags",
    ),
    (
        "tag value of 257 bytes",
        reserve_request(subject=pb.Subject(org=ORG, tags={"env": "v" * 257})),
        "subject.tags['env']",
    ),
    (
        "17 tags",
        reserve_request(subject=pb.Subject(org=ORG, tags={f"k{i}": "x" for i in range(17)})),
        "subject.tags",
    ),
    (
        "subject of 4,288 bytes",  # 16 x ("tag:" + 64 + 200): each part within its own bound
        reserve_request(
            subject=pb.Subject(org=ORG, tags={f"{i:02d}" + "k" * 62: "v" * 200 for i in range(16)})
        ),
        "subject",
    ),
    (
        "one tag name in two Unicode forms",
        reserve_request(subject=pb.Subject(org=ORG, tags={"\u00e9": "a", "e\u0301": "b"})),
        "subject.tags['\u00e9']",
    ),
    (
        "reservation id of 129 bytes",
        reserve_request(reservation_id="r" * 129),
        "reservation_id",
    ),
    ("non-ASCII reservation id", reserve_request(reservation_id="r\u00e9"), "reservation_id"),
]


@pytest.fixture
async def org_budget(admin) -> pb.BudgetStatus:
    await upsert(admin, ORG, "cap", usd("1"))
    return await status(admin, ORG, "cap")


@pytest.mark.parametrize(
    ("case", "request_", "field"), BAD_RESERVES, ids=[c[0] for c in BAD_RESERVES]
)
async def test_bad_reserve_is_refused_naming_the_field_and_changes_nothing(
    budgets, admin, org_budget, case, request_, field
):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await budgets.Reserve(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert bad_field(refused.value) == field
    assert field in (refused.value.details() or "")
    assert await status(admin, ORG, "cap") == org_budget


BAD_SETTLES = [
    ("commit without org", "Commit", pb.CommitRequest(reservation_id="r", actual_nanos=1), "org"),
    (
        "commit negative",
        "Commit",
        pb.CommitRequest(org=ORG, reservation_id="r", actual_nanos=-1),
        "actual_nanos",
    ),
    (
        "commit absurd",
        "Commit",
        pb.CommitRequest(org=ORG, reservation_id="r", actual_nanos=2**63 - 1),
        "actual_nanos",
    ),
    (
        "commit without actual",
        "Commit",
        pb.CommitRequest(org=ORG, reservation_id="r"),
        "actual_nanos",
    ),
    (
        "release overlong id",
        "Release",
        pb.ReleaseRequest(org=ORG, reservation_id="r" * 200),
        "reservation_id",
    ),
    (
        "refund without refund id",
        "Refund",
        pb.RefundRequest(org=ORG, reservation_id="r", amount_nanos=1),
        "refund_id",
    ),
    (
        "refund of zero",
        "Refund",
        pb.RefundRequest(org=ORG, reservation_id="r", refund_id="f", amount_nanos=0),
        "amount_nanos",
    ),
    ("extend without ttl", "Extend", pb.ExtendRequest(org=ORG, reservation_id="r"), "ttl"),
]


@pytest.mark.parametrize(
    ("case", "method", "request_", "field"), BAD_SETTLES, ids=[c[0] for c in BAD_SETTLES]
)
async def test_bad_settle_call_is_refused_naming_the_field(
    budgets, admin, org_budget, case, method, request_, field
):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(budgets, method)(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert bad_field(refused.value) == field
    assert await status(admin, ORG, "cap") == org_budget


BAD_BUDGETS = [
    ("missing id", pb.Budget(org=ORG, limit_nanos=1), "budget.id"),
    ("missing org", pb.Budget(id="b", limit_nanos=1), "budget.org"),
    ("negative limit", pb.Budget(org=ORG, id="b", limit_nanos=-1), "budget.limit_nanos"),
    (
        "unknown selector key",
        pb.Budget(org=ORG, id="b", limit_nanos=1, selector={"color": "x"}),
        "budget.selector['color']",
    ),
    (
        "empty selector value",
        pb.Budget(org=ORG, id="b", limit_nanos=1, selector={"team": ""}),
        "budget.selector['team']",
    ),
    ("unknown period", pb.Budget(org=ORG, id="b", limit_nanos=1, period=99), "budget.period"),
    ("unknown mode", pb.Budget(org=ORG, id="b", limit_nanos=1, mode=99), "budget.mode"),
    (
        "bad time zone",
        pb.Budget(org=ORG, id="b", limit_nanos=1, timezone="Mars/Olympus"),
        "budget.timezone",
    ),
    (
        "bad threshold",
        pb.Budget(org=ORG, id="b", limit_nanos=1, alert_thresholds_percent=[0]),
        "budget.alert_thresholds_percent",
    ),
    (
        "negative overdraft",
        pb.Budget(org=ORG, id="b", limit_nanos=1, overdraft_nanos=-5),
        "budget.overdraft_nanos",
    ),
    (
        "selector value of 258 bytes",
        pb.Budget(org=ORG, id="b", limit_nanos=1, selector={"user": "\u00e9" * 129}),
        "budget.selector['user']",
    ),
    (
        "selector tag name of 65 bytes",
        pb.Budget(org=ORG, id="b", limit_nanos=1, selector={"tag:" + "k" * 65: "x"}),
        "budget.selector['tag:kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk'...]",
    ),
    (
        "selector with 17 tags",
        pb.Budget(org=ORG, id="b", limit_nanos=1, selector={f"tag:k{i}": "x" for i in range(17)}),
        "budget.selector",
    ),
    (
        "selector naming one tag in two Unicode forms",
        pb.Budget(org=ORG, id="b", limit_nanos=1, selector={"tag:\u00e9": "a", "tag:e\u0301": "b"}),
        "budget.selector['tag:\u00e9']",
    ),
    (
        "time zone of 6,000 characters",  # once echoed whole: the status overflowed the trailers
        pb.Budget(org=ORG, id="b", limit_nanos=1, timezone="Europe/" * 857),
        "budget.timezone",
    ),
]


@pytest.mark.parametrize(("case", "budget", "field"), BAD_BUDGETS, ids=[c[0] for c in BAD_BUDGETS])
async def test_bad_budget_is_refused_naming_the_field_and_not_saved(admin, case, budget, field):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.UpsertBudget(pb.UpsertBudgetRequest(budget=budget))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert bad_field(refused.value) == field
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await admin.GetBudget(pb.GetBudgetRequest(org=ORG, budget_id="b"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_budget_is_not_found_with_its_name(admin):
    for call in (
        admin.GetBudget(pb.GetBudgetRequest(org=ORG, budget_id="ghost")),
        admin.GetBudgetStatus(pb.GetBudgetStatusRequest(org=ORG, budget_id="ghost")),
        admin.DeleteBudget(pb.DeleteBudgetRequest(org=ORG, budget_id="ghost")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "ghost" in (missing.value.details() or "")


async def test_bad_page_token_and_size_are_refused(admin):
    for request, field in (
        (pb.ListBudgetsRequest(org=ORG, page_token="not-a-token!"), "page_token"),
        (pb.ListBudgetsRequest(org=ORG, page_size=-1), "page_size"),
        (pb.ListBudgetsRequest(org=ORG, page_size=5000), "page_size"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.ListBudgets(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_field(refused.value) == field


def forged_token(after: str) -> str:
    """A page token in this service's own format, carrying what a forger chose."""
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


FORGED_TOKENS = [
    ("an Arabic-Indic digit", "ListReservations", forged_token("\u0663")),  # not 3 to us
    ("a superscript digit", "ListReservations", forged_token("\u00b2")),  # isdigit(), no int
    ("a position past Redis", "ListReservations", forged_token("9" * 30)),
    ("5000 digits", "ListReservations", forged_token("9" * 5000)),
    ("a NUL in a budget id", "ListBudgets", forged_token("a\u0000b")),
    ("not base64", "ListBudgets", "\u0663" * 8),
    ("longer than ours", "ListBudgets", forged_token("x") * 100),
]
LIST_REQUESTS = {
    "ListReservations": pb.ListReservationsRequest,
    "ListBudgets": pb.ListBudgetsRequest,
}


@pytest.mark.parametrize(
    ("case", "method", "token"), FORGED_TOKENS, ids=[c[0] for c in FORGED_TOKENS]
)
async def test_forged_page_token_is_refused(admin, org_budget, case, method, token):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await getattr(admin, method)(LIST_REQUESTS[method](org=ORG, page_token=token))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert bad_field(refused.value) == "page_token"


async def test_valid_reserve_after_all_bad_ones_still_works(budgets, admin, org_budget):
    held = await reserve(budgets, ORG, usd("0.01"))
    assert held.budgets[0].budget_id == "cap"
    await budgets.Release(pb.ReleaseRequest(org=ORG, reservation_id=held.reservation_id))
