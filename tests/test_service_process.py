"""`python -m budget_service` as operators run it: serves, drains in-flight calls on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack import free_port
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.conftest import Stack
from tests.helpers import rid, status, upsert, usd

START_TIMEOUT = 30.0


async def wait_serving(addr: str, proc: subprocess.Popen[bytes]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while loop.time() < deadline:
            assert proc.poll() is None, "the service exited during start"
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError as exc:
                # Not listening yet, or not answering within the second: try again.
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED):  # fmt: skip
                    raise
            await asyncio.sleep(0.1)
    raise AssertionError("the service did not become SERVING in time")


@pytest.fixture
def service_process(stack: Stack, pricing_app):
    addr = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "REDIS_URL": stack.redis.url,
        "DATABASE_URL": stack.postgres.url,
        "BUDGET_ADDR": addr,
        "PRICING_ADDR": f"127.0.0.1:{pricing_app.port}",  # SERVING needs its prices loaded
        "METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "LOG_LEVEL": "warning",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "budget_service"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield addr, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def test_sigterm_drains_in_flight_calls_and_loses_no_hold(service_process, admin, org):
    addr, proc = service_process
    await wait_serving(addr, proc)
    await upsert(admin, org, "cap", usd("1000"))
    answered: list[int] = []
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = budget_pb2_grpc.BudgetServiceStub(ch)

        async def one() -> None:
            try:
                reply = await stub.Reserve(
                    pb.ReserveRequest(
                        reservation_id=rid(), subject=pb.Subject(org=org), amount_nanos=usd("0.01")
                    ),
                    timeout=10,
                )
                answered.append(reply.reserved_nanos)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

        calls = [asyncio.ensure_future(one()) for _ in range(300)]
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*calls)
    assert await asyncio.to_thread(proc.wait, 15) == 0
    assert answered, "no call finished before the shutdown"
    # Every hold the service acknowledged is in Redis; none beyond them.
    assert (await status(admin, org, "cap")).reserved_nanos == sum(answered)


async def test_help_lists_every_setting_with_its_environment_variable():
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "budget_service", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for name in ("BUDGET_ADDR", "REDIS_URL", "DATABASE_URL", "DEFAULT_TTL_SECONDS"):
        assert name in result.stdout


async def test_missing_store_urls_fail_start_with_a_clear_message():
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "budget_service"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stdout and "make run" in result.stdout


async def test_second_service_on_a_taken_address_fails_to_start(service_process, stack):
    addr, proc = service_process
    await wait_serving(addr, proc)
    env = {**os.environ, "REDIS_URL": stack.redis.url, "DATABASE_URL": stack.postgres.url,
           "BUDGET_ADDR": addr, "METRICS_ADDR": "", "LOG_LEVEL": "warning"}  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "budget_service"], env=env,
        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "BUDGET_ADDR" in result.stdout
