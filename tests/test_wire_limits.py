"""What reaches a server before any handler: undecodable bytes, oversized messages, and the
server's connection limits. Every refusal is a clean, documented status and changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from devstack import free_port
from genproto.budget.v1 import budget_pb2 as pb
from genproto.pricing.v1 import pricing_pb2 as ppb
from genproto.pricing.v1 import pricing_pb2_grpc
from pricing_service import server as pricing_server
from servicekit.serving import server_options
from servicekit.settings import Settings
from tests.conftest import Stack, service_settings
from tests.helpers import bad_field, reserve, rid, status, upsert, usd
from tests.test_service_process import wait_serving

MiB = 1024 * 1024


def raw(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    """A unary call that sends the bytes it is given, as they are."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def with_bad_utf8(message: object, marker: bytes) -> bytes:
    """`message`'s bytes with `marker` (a string field's value) overwritten by invalid UTF-8."""
    data: bytes = message.SerializeToString()  # type: ignore[attr-defined]
    assert data.count(marker) == 1
    return data.replace(marker, b"\xff\xfe" + marker[2:])


CORRUPT = b"\x0a\x05ab"  # field 1, length 5, but only two bytes follow


@pytest.fixture(scope="module")
async def pricing_channel(pricing_app) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{pricing_app.port}") as channel:
        yield channel


async def expect_invalid(call: object, field: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert bad_field(refused.value) == field
    return refused.value


# -- undecodable requests ----------------------------------------------------------------------


async def test_reserve_with_invalid_utf8_or_corrupt_bytes_is_invalid_argument_and_changes_nothing(
    channel, budgets, admin, org
):
    await upsert(admin, org, "cap", usd("1"))
    before = await status(admin, org, "cap")
    reservation_id = rid()
    request = pb.ReserveRequest(
        reservation_id=reservation_id,
        subject=pb.Subject(org=org, user="USERVALUE"),
        amount_nanos=usd("0.10"),
    )
    call = raw(channel, "/budget.v1.BudgetService/Reserve")
    refused = await expect_invalid(call(with_bad_utf8(request, b"USERVALUE")), "subject.user")
    assert "UTF-8" in (refused.details() or "")
    refused = await expect_invalid(call(CORRUPT), "request")
    assert "budget.v1.ReserveRequest" in (refused.details() or "")

    assert await status(admin, org, "cap") == before
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=reservation_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # The server goes on serving, on the same connection.
    assert (await reserve(budgets, org, usd("0.10"))).reserved_nanos == usd("0.10")


async def test_admin_upsert_with_invalid_utf8_in_a_selector_is_invalid_argument_and_saves_nothing(
    channel, admin, org
):
    budget = pb.Budget(org=org, id="b", limit_nanos=1, selector={"team": "TEAMVALUE"})
    request = pb.UpsertBudgetRequest(budget=budget)
    call = raw(channel, "/budget.v1.BudgetAdminService/UpsertBudget")
    await expect_invalid(call(with_bad_utf8(request, b"TEAMVALUE")), "budget.selector.value")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await admin.GetBudget(pb.GetBudgetRequest(org=org, budget_id="b"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_pricing_methods_answer_undecodable_bytes_with_invalid_argument(pricing_channel):
    get_price = raw(pricing_channel, "/pricing.v1.PricingService/GetPrice")
    request = ppb.GetPriceRequest(model="MODELNAME")
    await expect_invalid(get_price(with_bad_utf8(request, b"MODELNAME")), "model")
    await expect_invalid(get_price(CORRUPT), "request")
    # A server-streaming method, outside the RPC wrapper, answers the same.
    watch = pricing_channel.unary_stream(
        "/pricing.v1.PricingService/WatchPrices",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in watch(b"\x08"):  # field 1 (since_version), its varint missing
            pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(refused.value) == "request"
    found = await pricing_pb2_grpc.PricingServiceStub(pricing_channel).GetPrice(
        ppb.GetPriceRequest(model="gpt-4o")
    )
    assert found.model == "gpt-4o"


async def test_health_check_and_watch_with_corrupt_bytes_are_invalid_argument(channel):
    call = raw(channel, "/grpc.health.v1.Health/Check")
    await expect_invalid(call(CORRUPT), "request")
    watch = channel.unary_stream(
        "/grpc.health.v1.Health/Watch", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in watch(CORRUPT):
            pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(refused.value) == "request"
    reply = health_pb2.HealthCheckResponse.FromString(
        await call(health_pb2.HealthCheckRequest().SerializeToString())
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- message size ------------------------------------------------------------------------------


async def test_request_over_the_default_4_mib_is_resource_exhausted_and_the_server_goes_on(
    budgets, admin, org
):
    await upsert(admin, org, "cap", usd("1"))
    before = await status(admin, org, "cap")
    huge = pb.ReserveRequest(
        reservation_id=rid(), subject=pb.Subject(org=org, team="t" * (5 * MiB)), amount_nanos=1
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await budgets.Reserve(huge)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await status(admin, org, "cap") == before
    assert (await reserve(budgets, org, usd("0.10"))).reserved_nanos == usd("0.10")


@pytest.fixture
def logging_service(
    stack: Stack, pricing_app, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`python -m budget_service` logging at info, as JSON lines, into a file."""
    addr = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "service.log"
    env = {
        **os.environ,
        "REDIS_URL": stack.redis.url,
        "DATABASE_URL": stack.postgres.url,
        "BUDGET_ADDR": addr,
        "PRICING_ADDR": f"127.0.0.1:{pricing_app.port}",
        "METRICS_ADDR": "",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "SHUTDOWN_GRACE_SECONDS": "2",
    }
    # A file, not a pipe: a service that wrote the whole org would block on a full pipe.
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "budget_service"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield addr, proc, log_path
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def test_org_of_3_mb_is_invalid_argument_and_logged_cut_short(logging_service):
    addr, proc, log_path = logging_service
    await wait_serving(addr, proc)
    org = "x" * 3_000_000
    async with grpc.aio.insecure_channel(addr) as ch:
        request = pb.ReserveRequest(
            reservation_id="r1", subject=pb.Subject(org=org), amount_nanos=1
        )
        call = raw(ch, "/budget.v1.BudgetService/Reserve")
        refused = await expect_invalid(call(request.SerializeToString()), "subject.org")
    assert len(refused.details() or "") < 200
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0

    text = log_path.read_text()
    assert "x" * 129 not in text  # a valid org has at most 128 characters
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    [logged] = [e for e in lines if e.get("event") == "rpc" and e.get("method") == "Reserve"]
    assert logged["outcome"] == "INVALID_ARGUMENT"
    assert logged["org"].startswith("x" * 100) and "3000000" in logged["org"]


# -- server limits from the settings -----------------------------------------------------------


@pytest.fixture
async def limited_pricing(stack: Stack) -> AsyncIterator[pricing_server.PricingApp]:
    """A pricing service with tight limits: 64 KiB requests, one call in flight per connection."""
    settings = service_settings(
        stack,
        pricing_addr="127.0.0.1:0",
        grpc_max_receive_message_bytes=64 * 1024,
        max_usage_json_bytes=1024,
        grpc_max_concurrent_streams=1,
    )
    running = await pricing_server.start(settings)
    try:
        yield running
    finally:
        await running.stop()


async def test_settings_bound_request_size_and_calls_in_flight(limited_pricing):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited_pricing.port}") as channel:
        stub = pricing_pb2_grpc.PricingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetPrice(ppb.GetPriceRequest(model="m" * 100_000))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.GetPrice(ppb.GetPriceRequest(model="gpt-4o"))).model == "gpt-4o"

        # One stream open on the connection: a second call waits for it to end.
        watch = stub.WatchPrices(ppb.WatchPricesRequest(since_version=10**9))
        assert (await watch.read()).caught_up
        with pytest.raises(grpc.aio.AioRpcError) as waited:
            await stub.GetPrice(ppb.GetPriceRequest(model="gpt-4o"), timeout=1.0)
        assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        watch.cancel()
        assert (await stub.GetPrice(ppb.GetPriceRequest(model="gpt-4o"))).model == "gpt-4o"


def test_server_options_come_from_the_settings():
    settings = Settings.from_env(
        {
            "GRPC_MAX_RECEIVE_MESSAGE_BYTES": "1048576",
            "GRPC_MAX_SEND_MESSAGE_BYTES": "2097152",
            "GRPC_MAX_CONCURRENT_STREAMS": "50",
            "GRPC_MAX_CONNECTION_AGE_SECONDS": "600",
            "GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS": "15",
            "GRPC_KEEPALIVE_SECONDS": "30",
            "GRPC_KEEPALIVE_TIMEOUT_SECONDS": "5",
            "GRPC_MIN_CLIENT_PING_SECONDS": "20",
        }
    )
    assert dict(server_options(settings)) == {
        "grpc.max_receive_message_length": 1048576,
        "grpc.max_send_message_length": 2097152,
        "grpc.max_concurrent_streams": 50,
        "grpc.max_connection_age_ms": 600_000,
        "grpc.max_connection_age_grace_ms": 15_000,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.min_ping_interval_without_data_ms": 20_000,
    }
    never = Settings.from_env({"GRPC_MAX_CONNECTION_AGE_SECONDS": "0"})
    assert "grpc.max_connection_age_ms" not in dict(server_options(never))


def test_defaults_keep_grpc_4_mib_requests_and_age_connections():
    options = dict(server_options(Settings()))
    assert options["grpc.max_receive_message_length"] == 4 * MiB
    assert options["grpc.max_send_message_length"] == 16 * MiB
    assert options["grpc.max_concurrent_streams"] == 1000
    assert options["grpc.max_connection_age_ms"] == 1_800_000
