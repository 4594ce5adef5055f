"""Real Redis and PostgreSQL, started once per test run on free ports, and the service on them."""

from __future__ import annotations

import os

# Tests start PostgreSQL (initdb, postgres) with fork+exec from a process that also runs gRPC
# servers and channels; gRPC's fork handlers then crash the child now and then (initdb dies
# with SIGSEGV). Nothing here relies on gRPC surviving a fork, so turn that support off before
# grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from budget_service import server
from devstack import PostgresProcess, RedisProcess, free_port
from genproto.budget.v1 import budget_pb2_grpc
from pricing_service import server as pricing_server
from servicekit import logs
from servicekit.clock import OffsetClock
from servicekit.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Stack:
    redis: RedisProcess
    postgres: PostgresProcess


@contextlib.contextmanager
def own_stack(root: Path) -> Iterator[Stack]:
    """A Redis (AOF on) and a PostgreSQL of their own under `root`, stopped on exit."""
    redis = RedisProcess(root / "redis", free_port())
    postgres = PostgresProcess(root / "postgres", free_port(), fsync=False)
    redis.start()
    try:
        postgres.start()
    except BaseException:
        redis.stop()
        raise
    try:
        yield Stack(redis, postgres)
    finally:
        postgres.stop()
        redis.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One Redis and one PostgreSQL for the whole run, in a temporary folder."""
    with own_stack(tmp_path_factory.mktemp("stack")) as started:
        yield started


@pytest.fixture(scope="session")
def clock() -> OffsetClock:
    """The service's clock; tests move it to cross period boundaries, and must reset it."""
    return OffsetClock()


def service_settings(stack: Stack, **overrides: object) -> Settings:
    """Settings for an in-process service on the run's stores and a free port."""
    values: dict[str, object] = {
        "redis_url": stack.redis.url,
        "database_url": stack.postgres.url,
        "budget_addr": "127.0.0.1:0",
        "metrics_addr": "127.0.0.1:0",
        "sweep_interval_seconds": 0.2,
        "shutdown_grace_seconds": 2.0,
        "log_level": os.environ.get("TEST_LOG_LEVEL", "warning"),
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


@pytest.fixture(scope="session")
def _logging() -> None:
    logs.configure(os.environ.get("TEST_LOG_LEVEL", "warning"), "console")


@pytest.fixture(scope="session")
async def pricing_app(_logging: None, stack: Stack) -> AsyncIterator[pricing_server.PricingApp]:
    """The pricing service, in this process, for the whole run (bundled catalog loaded)."""
    running = await pricing_server.start(service_settings(stack, pricing_addr="127.0.0.1:0"))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="session")
async def app(
    _logging: None, stack: Stack, clock: OffsetClock, pricing_app: pricing_server.PricingApp
) -> AsyncIterator[server.App]:
    """The budget service, in this process, for the whole run, pricing from `pricing_app`."""
    settings = service_settings(stack, pricing_addr=f"127.0.0.1:{pricing_app.port}")
    running = await server.start(settings, clock)
    assert await running.wait_ready(30), "never SERVING: the price table never loaded"
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="session")
async def channel(app: server.App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        yield ch


@pytest.fixture(scope="session")
def budgets(channel: grpc.aio.Channel) -> budget_pb2_grpc.BudgetServiceStub:
    return budget_pb2_grpc.BudgetServiceStub(channel)


@pytest.fixture(scope="session")
def admin(channel: grpc.aio.Channel) -> budget_pb2_grpc.BudgetAdminServiceStub:
    return budget_pb2_grpc.BudgetAdminServiceStub(channel)


@pytest.fixture(scope="session")
def health(channel: grpc.aio.Channel) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(channel)


_orgs = itertools.count()


@pytest.fixture
def org() -> str:
    """A fresh org per test, so tests never see each other's budgets or counters."""
    return f"org-{next(_orgs)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def paused_writer(app: server.App) -> AsyncIterator[server.App]:
    """The session service with its ledger writer stopped (restarted afterwards)."""
    job = next(j for j in app.background if j.name == "ledger-writer")
    await job.stop()
    try:
        yield app
    finally:
        job.start()
