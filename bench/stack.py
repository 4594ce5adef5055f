"""The server side of a bench run: Redis (AOF on), PostgreSQL, the pricing service and N budget
service processes.

Everything lives in one temporary folder and listens on free ports. `Stack` is a context
manager: leaving it (normally, on an error or on Ctrl-C) stops every process it started, the
budget service processes first (they drain, then close their store connections), then the
pricing service, PostgreSQL and Redis, and removes the folder.

The budget services price token-based Reserves from an in-process table fed by the pricing
service's WatchPrices stream; the stack is ready only once every budget service process has
priced a token Reserve, so the token figures never measure a table still loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import procfs
from bench.client import SUBJECT
from budget_service.config import epoch as epochs
from budget_service.config.budget_repo import BudgetRepository
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import store
from budget_service.hotpath.budgets import validate_budget
from devstack import PostgresProcess, RedisProcess, free_port
from devstack._process import log_tail
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from servicekit import db

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE_START_TIMEOUT = 60.0
ORG_LOAD_TIMEOUT = 120.0  # a service process reads an org of 100,000 budgets in seconds
SERVICE_STOP_TIMEOUT = 10.0
PRICES_LOAD_TIMEOUT = 30.0  # from SERVING until every service process has its price table
# The readiness check reserves tokens of the bench's model on an org of its own, with no
# budgets, and releases each hold.
PRICE_CHECK_ORG = "bench-price-check"


class BenchError(RuntimeError):
    """A bench run could not go on; the message says why."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


class ServiceProcess:
    """One `python -m budget_service` (or `module`), its output in a log file."""

    def __init__(
        self,
        index: int,
        env: dict[str, str],
        log_path: Path,
        profile_path: Path | None,
        *,
        module: str = "budget_service",
    ) -> None:
        self.index = index
        self.env = env
        self.log_path = log_path
        self.profile_path = profile_path
        self.module = module
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        """How messages name it: "budget service 0", "pricing service"."""
        if self.module == "budget_service":
            return f"budget service {self.index}"
        return self.module.replace("_", " ")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = dict(self.env)
        if self.profile_path is not None:
            module = "bench.profiling"
            env["BENCH_PROFILE_OUT"] = str(self.profile_path)
        else:
            module = self.module
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
                # Its own session: Ctrl-C in the terminal reaches the bench, which stops the
                # service before the stores, instead of everything at once.
                start_new_session=True,
                # preexec_fn is only safe while this process has a single thread (before grpc
                # starts its own); it is, as services start before the first channel.
                preexec_fn=_die_with_parent if _single_threaded() else None,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def stop(self, timeout: float = SERVICE_STOP_TIMEOUT) -> None:
        """SIGTERM (graceful: drain in-flight calls), then SIGKILL after `timeout`."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        return log_tail(self.log_path)


class Stack:
    """Redis, PostgreSQL, the pricing service and the budget service processes of one run."""

    def __init__(
        self, *, server_procs: int, log_level: str, profile: bool = False, keep_dir: bool = False
    ) -> None:
        self.server_procs = server_procs
        self.log_level = log_level
        self.profile = profile
        self.keep_dir = keep_dir
        self.root = Path(tempfile.mkdtemp(prefix="budget-bench-"))
        self.redis = RedisProcess(self.root / "redis", free_port())
        self.postgres = PostgresProcess(self.root / "postgres", free_port(), fsync=False)
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.pricing_port = free_port()
        self.pricing_addr = f"127.0.0.1:{self.pricing_port}"
        self.pricing: ServiceProcess | None = None
        self.services: list[ServiceProcess] = []
        self._exit = ExitStack()

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        if not self.keep_dir:
            self._exit.callback(shutil.rmtree, self.root, ignore_errors=True)
        # Each stop is registered before its start, so a start interrupted half-way is undone.
        self._exit.callback(self.redis.stop)
        self.redis.start()
        self._exit.callback(self.postgres.stop)
        self.postgres.start()
        env = {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.postgres.url,
            "BUDGET_ADDR": self.addr,
            "PRICING_ADDR": self.pricing_addr,
            "LOG_LEVEL": self.log_level,
            "SHUTDOWN_GRACE_SECONDS": "2",
        }
        # The pricing service first: a budget service's price stream then connects at once
        # instead of backing off. It stops after the budget services (LIFO), before PostgreSQL.
        # Only the bundled catalog: no price source is fetched during a bench.
        self.pricing = ServiceProcess(
            0,
            {**env, "PRICING_SOURCE_URLS": ""},
            self.root / "pricing.log",
            None,
            module="pricing_service",
        )
        self._exit.callback(self.pricing.stop)
        self.pricing.start()
        # Listening is read from /proc, not asked over gRPC: the budget services below must
        # start while this process is still single-threaded (see _die_with_parent).
        self._wait_listening(self.pricing, self.pricing_port)
        self._exit.callback(self._stop_services)
        if self.server_procs > 1:
            # The service refuses a taken address unless told to share it (SO_REUSEPORT).
            env["BUDGET_REUSE_PORT"] = "1"
        # One at a time: each migrates and reconciles on start, and readiness is per process.
        for i in range(self.server_procs):
            profile_path = self.root / f"service-{i}.prof" if self.profile else None
            service_env = {**env, "METRICS_ADDR": f"127.0.0.1:{free_port()}"}
            service = ServiceProcess(i, service_env, self.root / f"service-{i}.log", profile_path)
            self.services.append(service)
            service.start()
            self._wait_listening(service, self.port)
        self._wait_serving()
        self._wait_pricing_serving()
        self._wait_prices_loaded()

    def close(self) -> None:
        """Stop everything; safe to call more than once."""
        self._exit.close()

    def _stop_services(self) -> None:
        for service in self.services:
            service.signal(signal.SIGTERM)  # all drain at once
        for service in self.services:
            service.stop()

    # --- readiness ------------------------------------------------------------------------

    def _wait_listening(self, service: ServiceProcess, port: int) -> None:
        """Until this very process listens on `port` (for budget services: the shared port)."""
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while not procfs.listening_on(service.pid, port):
            self._check_started(service)
            if time.monotonic() > deadline:
                raise BenchError(f"{service.label} did not listen in time")
            time.sleep(0.05)

    @staticmethod
    def _check_started(service: ServiceProcess) -> None:
        if not service.alive():
            raise BenchError(
                f"{service.label} exited during startup\n"
                f"--- tail of {service.log_path} ---\n{service.log_tail()}"
            )

    def _wait_serving(self) -> None:
        """Until grpc health answers SERVING on fresh connections (each may hit any process)."""
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        needed = 4 * self.server_procs
        good = 0
        while good < needed:
            for service in self.services:
                self._check_started(service)
            if time.monotonic() > deadline:
                raise BenchError("the budget service did not report SERVING in time")
            with grpc.insecure_channel(
                self.addr, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=2.0
                    )
                    ok = answer.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    ok = False
            good = good + 1 if ok else 0
            if not ok:
                time.sleep(0.05)

    def _wait_pricing_serving(self) -> None:
        """Until the pricing service's grpc health answers SERVING."""
        assert self.pricing is not None
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        with grpc.insecure_channel(self.pricing_addr) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while True:
                self._check_started(self.pricing)
                try:
                    answer = check(health_pb2.HealthCheckRequest(), timeout=2.0)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(
                        "the pricing service did not report SERVING in time\n"
                        f"--- tail of {self.pricing.log_path} ---\n{self.pricing.log_tail()}"
                    )
                time.sleep(0.05)

    def _wait_prices_loaded(self) -> None:
        """Until every budget service process prices a token Reserve (its price table loaded).

        A process whose WatchPrices stream has not caught up answers UNAVAILABLE. Each attempt
        is a fresh connection, which the kernel gives to any of the processes sharing the port;
        /proc tells which one answered, and the wait ends when each one has.
        """
        assert self.pricing is not None
        deadline = time.monotonic() + PRICES_LOAD_TIMEOUT
        pending = set(self.service_pids)
        last = "no answer yet"
        attempt = 0
        while pending:
            for service in [*self.services, self.pricing]:
                self._check_started(service)
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the budget service's price table did not load within"
                    f" {PRICES_LOAD_TIMEOUT:.0f} s ({len(pending)} of {len(self.services)}"
                    f" process(es) not ready; last answer: {last})\n"
                    f"--- tail of {self.services[0].log_path} ---\n{self.services[0].log_tail()}\n"
                    f"--- tail of {self.pricing.log_path} ---\n{self.pricing.log_tail()}"
                )
            attempt += 1
            rid = f"price-check-{attempt}"
            before = procfs.socket_inodes()
            with grpc.insecure_channel(
                self.addr, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = budget_pb2_grpc.BudgetServiceStub(channel)  # type: ignore[no-untyped-call]
                try:
                    stub.Reserve(
                        pb.ReserveRequest(
                            reservation_id=rid,
                            subject=pb.Subject(
                                org=PRICE_CHECK_ORG,
                                model=SUBJECT["model"],
                                provider=SUBJECT["provider"],
                            ),
                            usage=pb.Usage(input_tokens=1, output_tokens=1),
                        ),
                        timeout=5.0,
                    )
                except grpc.RpcError as exc:
                    code, details = exc.code(), exc.details()
                    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise BenchError(
                            f"a token Reserve ({SUBJECT['model']}) failed: {code.name}: {details}"
                        ) from None
                    last = f"{code.name}: {details}"
                    time.sleep(0.1)
                    continue
                if len(self.services) == 1:
                    pending.clear()
                else:
                    pending.discard(self._owner(procfs.socket_inodes() - before))
                stub.Release(
                    pb.ReleaseRequest(org=PRICE_CHECK_ORG, reservation_id=rid), timeout=5.0
                )

    def _owner(self, new_inodes: set[int]) -> int:
        """Service pid that accepted the connection whose client socket is in `new_inodes`."""
        ports = {
            s.local_port
            for s in procfs.tcp_sockets()
            if s.inode in new_inodes
            and s.remote_port == self.port
            and s.state == procfs.TCP_ESTABLISHED
        }
        for pid, remote_ports in procfs.server_connections(self.service_pids, self.port).items():
            if ports & set(remote_ports):
                return pid
        return 0

    # --- setup and figures ----------------------------------------------------------------

    def upsert_budgets(
        self, org: str, budgets: list[tuple[str, dict[str, str]]], limit_nanos: int
    ) -> None:
        """Create the run's budgets through BudgetAdminService (PostgreSQL, then Redis)."""
        with grpc.insecure_channel(self.addr) as channel:
            admin = budget_pb2_grpc.BudgetAdminServiceStub(channel)  # type: ignore[no-untyped-call]
            for budget_id, selector in budgets:
                admin.UpsertBudget(
                    pb.UpsertBudgetRequest(
                        budget=pb.Budget(
                            id=budget_id,
                            org=org,
                            selector=selector,
                            limit_nanos=limit_nanos,
                            period=pb.PERIOD_MONTH,
                            timezone="UTC",
                            mode=pb.MODE_HARD,
                        )
                    ),
                    timeout=10.0,
                    metadata=[("x-actor", "bench")],
                )

    def create_budgets(self, budgets: list[pb.Budget], actor: str = "bench") -> None:
        """Create many new budgets at once: PostgreSQL first (one transaction, with audit
        rows), then Redis through the sync_org script, 1,000 budgets a call.

        The service's own bulk path (BudgetRepository.create_many, ConfigSync.push_many), run
        here against the run's stores: an org of 100,000 budgets in seconds, where one
        UpsertBudget per budget would take minutes.
        """
        asyncio.run(self._create_budgets([validate_budget(b) for b in budgets], actor))

    async def _create_budgets(self, budgets: list[pb.Budget], actor: str) -> None:
        pool = await db.connect(self.postgres.url)
        redis_client = store.connect(self.redis.url, timeout_seconds=30.0, pool_size=2)
        scripts = store.Scripts(redis_client)
        try:
            await scripts.load()
            created = await BudgetRepository(pool).create_many(budgets, actor)
            epoch = await epochs.load(pool)  # the database's: what the services expect
            await ConfigSync(scripts, epoch.value).push_many(created, new_orgs=True)
        finally:
            scripts.close()
            await redis_client.aclose()
            await pool.close()

    def warm_org(self, subject: pb.Subject) -> None:
        """Until every service process has answered a Reserve on `subject`'s org (so each has
        read the org's configuration); each hold is released."""
        deadline = time.monotonic() + ORG_LOAD_TIMEOUT
        pending = set(self.service_pids)
        attempt = 0
        while pending:
            self.check_services()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{len(pending)} service process(es) did not answer a Reserve on org"
                    f" {subject.org!r} within {ORG_LOAD_TIMEOUT:.0f} s"
                )
            attempt += 1
            rid = f"warm-{subject.org}-{attempt}"
            before = procfs.socket_inodes()
            with grpc.insecure_channel(
                self.addr, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = budget_pb2_grpc.BudgetServiceStub(channel)  # type: ignore[no-untyped-call]
                try:
                    stub.Reserve(
                        pb.ReserveRequest(reservation_id=rid, subject=subject, amount_nanos=1),
                        timeout=ORG_LOAD_TIMEOUT,
                    )
                except grpc.RpcError as exc:  # a loaded machine: the first read may time out
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    time.sleep(0.5)
                    continue
                if len(self.services) == 1:
                    pending.clear()
                else:
                    pending.discard(self._owner(procfs.socket_inodes() - before))
                stub.Release(pb.ReleaseRequest(org=subject.org, reservation_id=rid), timeout=5.0)

    def service_resident_bytes(self) -> int:
        """Resident memory of the budget service processes together."""
        return sum(procfs.resident_bytes(pid) for pid in self.service_pids)

    @property
    def service_pids(self) -> list[int]:
        return [s.pid for s in self.services]

    def check_services(self) -> None:
        """Raise if a service process (budget or pricing) died during the run."""
        for service in [*self.services, *([self.pricing] if self.pricing else [])]:
            if not service.alive():
                raise BenchError(
                    f"{service.label} died during the run\n"
                    f"--- tail of {service.log_path} ---\n{service.log_tail()}"
                )
