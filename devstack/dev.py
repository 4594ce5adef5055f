"""`python -m devstack` (what `make run` runs): Redis, PostgreSQL and both services, locally.

With no REDIS_URL / DATABASE_URL in the environment it starts a real Redis (AOF on, appendfsync
everysec) and a real PostgreSQL with their data under $BUDGET_DATA_DIR (default ./.data/), on
fixed ports (Redis 6390, PostgreSQL 5439; DEV_REDIS_PORT / DEV_POSTGRES_PORT override them). A
store whose URL is set is used as is. Then it runs the pricing service (PRICING_ADDR, default
127.0.0.1:50052; it migrates its tables and seeds the bundled price catalog) and the budget
service (BUDGET_ADDR, default 127.0.0.1:50051) as child processes, waits until the health check
of each says SERVING (the budget service's once its prices are loaded), seeds the demo org
(only budgets that do not exist yet, so an operator's edits survive the next start), prints
where everything is, and supervises: SIGINT / SIGTERM stop the budget service first (it
drains), then the pricing service, then Redis and PostgreSQL, and exit 0. If a service or a
store dies, everything else is stopped and the exit status is 1, with the last lines of its log.

Every child runs in its own session, so a terminal's Ctrl-C reaches only this process, which
stops them in order; on Linux each child also gets a parent-death signal, so a SIGKILLed
devstack leaves no orphans holding the ports.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack._process import ServerProcess, log_tail
from devstack.postgres_process import PostgresProcess
from devstack.redis_process import RedisProcess
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from servicekit.errors import ConfigError
from servicekit.settings import Settings

DEFAULT_REDIS_PORT = 6390
DEFAULT_POSTGRES_PORT = 5439
STORE_HOST = "127.0.0.1"

REDIS_START_TIMEOUT = 20.0
POSTGRES_START_TIMEOUT = 90.0  # the first start runs initdb
# Before SERVING: migrations, the Redis reconcile, the catalog seed (and sources), and the
# budget service's price table loading the catalog from the pricing service.
SERVING_TIMEOUT = 60.0
STORE_STOP_TIMEOUT = 15.0
SERVICE_STOP_MARGIN = 5.0  # on top of the service's own SHUTDOWN_GRACE_SECONDS
RPC_TIMEOUT = 10.0
POLL_INTERVAL = 0.2
LOG_TAIL_LINES = 40

NANOS_PER_USD = 10**9
DEMO_ORG = "demo"
DEMO_BUDGETS = (
    pb.Budget(
        id="demo-monthly", org=DEMO_ORG, limit_nanos=10 * NANOS_PER_USD,
        period=pb.PERIOD_MONTH, timezone="UTC", mode=pb.MODE_HARD,
    ),
    pb.Budget(
        id="demo-team-search", org=DEMO_ORG, selector={"team": "search"},
        limit_nanos=1 * NANOS_PER_USD, period=pb.PERIOD_DAY, timezone="UTC", mode=pb.MODE_HARD,
    ),
)  # fmt: skip
SEED_ACTOR = "devstack-seed"

BUDGET_MODULE = "budget_service"
PRICING_MODULE = "pricing_service"
# The gRPC listen-address settings and the port each one's example uses.
ADDR_SETTINGS = {"BUDGET_ADDR": 50051, "PRICING_ADDR": 50052}
PRICE_EXAMPLE_MODEL = "openai/gpt-4o"

USAGE = f"""usage: python -m devstack   (or: make run)

Starts Redis, PostgreSQL, the pricing service and the budget service for local development,
seeds the demo org ({", ".join(b.id for b in DEMO_BUDGETS)}) and runs until Ctrl-C or SIGTERM.

Environment:
  BUDGET_DATA_DIR     where Redis and PostgreSQL keep their data (default ./.data)
  DEV_REDIS_PORT      port of the Redis started here (default {DEFAULT_REDIS_PORT})
  DEV_POSTGRES_PORT   port of the PostgreSQL started here (default {DEFAULT_POSTGRES_PORT})
  REDIS_URL           use this Redis instead of starting one
  DATABASE_URL        use this PostgreSQL instead of starting one
  BUDGET_ADDR         where the budget service listens (default 127.0.0.1:50051)
  PRICING_ADDR        where the pricing service listens (default 127.0.0.1:50052)
  LOG_FORMAT          the services' log format (default: console on a terminal, else json)
Every other setting of the services (see `python -m budget_service --help`) is passed through.
"""


class DevstackError(Exception):
    """Something the user can fix (a port in use, a bad setting): printed, exit status 2."""


class StopRequested(Exception):
    """SIGINT / SIGTERM arrived while starting up."""


class ChildDied(Exception):
    """A service or a store exited on its own (or did not come up): exit status 1.

    `service` is the service at fault, if any: its last log lines go with the message.
    """

    def __init__(self, message: str, service: ServiceProcess | None = None) -> None:
        super().__init__(message)
        self.service = service


def say(message: str) -> None:
    """devstack's own messages go to stderr; stdout carries the service's log."""
    print(f"devstack: {message}", file=sys.stderr, flush=True)


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevConfig:
    """What `python -m devstack` runs, read from the environment."""

    data_dir: Path
    redis_url: str  # "" means: start a Redis here
    database_url: str  # "" means: start a PostgreSQL here
    redis_port: int
    postgres_port: int
    budget_addr: str
    pricing_addr: str
    log_format: str
    shutdown_grace_seconds: float
    redis_appendfsync: str = "everysec"

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, stdout_is_tty: bool) -> DevConfig:
        try:
            settings = Settings.from_env(dict(env))
        except ConfigError as exc:
            raise DevstackError(exc.message) from exc
        for env_var, addr in (
            ("BUDGET_ADDR", settings.budget_addr),
            ("PRICING_ADDR", settings.pricing_addr),
        ):
            _, port = split_addr(addr, env_var)
            if port == 0:
                example = f"127.0.0.1:{ADDR_SETTINGS[env_var]}"
                raise DevstackError(f"{env_var}={addr!r} needs a fixed port, e.g. {example}")
        log_format = env.get("LOG_FORMAT") or ("console" if stdout_is_tty else "json")
        appendfsync = env.get("DEV_REDIS_APPENDFSYNC") or "everysec"
        if appendfsync not in ("everysec", "always"):
            raise DevstackError(
                f"DEV_REDIS_APPENDFSYNC={appendfsync!r}: use everysec (default: a crash of the"
                " machine loses at most about one second of writes) or always (loses none,"
                " slower)"
            )
        return cls(
            data_dir=Path(settings.data_dir),
            redis_url=settings.redis_url,
            database_url=settings.database_url,
            redis_port=_port_setting(env, "DEV_REDIS_PORT", DEFAULT_REDIS_PORT),
            postgres_port=_port_setting(env, "DEV_POSTGRES_PORT", DEFAULT_POSTGRES_PORT),
            budget_addr=settings.budget_addr,
            pricing_addr=settings.pricing_addr,
            log_format=log_format,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            redis_appendfsync=appendfsync,
        )

    @property
    def service_log(self) -> Path:
        return self.data_dir / f"{BUDGET_MODULE}.log"

    @property
    def pricing_log(self) -> Path:
        return self.data_dir / f"{PRICING_MODULE}.log"


def _port_setting(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise DevstackError(f"{name}={raw!r} is not a port number (1-65535)")
    return int(raw)


def split_addr(addr: str, env_var: str = "BUDGET_ADDR") -> tuple[str, int]:
    """('host', port) of a gRPC listen address such as 127.0.0.1:50051 or [::]:50051."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        example = ADDR_SETTINGS.get(env_var, 50051)
        raise DevstackError(f"{env_var}={addr!r} is not host:port, e.g. 127.0.0.1:{example}")
    return host.strip("[]"), int(port)


WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")


def dial_target(addr: str, env_var: str = "BUDGET_ADDR") -> str:
    """Where a client on this machine reaches a service listening on `addr`."""
    host, port = split_addr(addr, env_var)
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _hosts_overlap(a: str, b: str) -> bool:
    """Whether listening on the same port on hosts `a` and `b` would collide."""
    return a == b or a in WILDCARD_HOSTS or b in WILDCARD_HOSTS


# --- ports --------------------------------------------------------------------------------------


def port_in_use(host: str, port: int) -> bool:
    """True when a server is listening on host:port (or something else holds it)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return False  # the service reports an address it cannot use itself
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            # SO_REUSEADDR, as servers set it: connections in TIME_WAIT left by the previous run
            # must not count as "in use", a listener must.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def _free_neighbour(host: str, port: int) -> int | None:
    for candidate in range(port + 1, min(port + 50, 65535)):
        if not port_in_use(host, candidate):
            return candidate
    return None


def check_port(host: str, port: int, what: str, env_var: str, alternative: str) -> None:
    """Fail with a message naming the variable to set when host:port is taken."""
    if not port_in_use(host, port):
        return
    spare = _free_neighbour(host, port)
    example = str(spare) if spare else "<a free port>"
    if env_var in ADDR_SETTINGS:
        example = f"{host or '0.0.0.0'}:{example}"
    raise DevstackError(
        f"port {port} on {host or '*'} ({what}) is already in use: is another `make run`"
        f" still running? Otherwise set {env_var} to a free one, e.g.\n"
        f"    {env_var}={example} make run\n"
        f"{alternative}"
    )


# --- child processes ----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive `sig` when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        # Runs in the child after fork (and after any setuid), before exec.
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


class _SupervisedServer(ServerProcess):
    """A store whose process runs in its own session and dies with devstack."""

    def _popen_options(self) -> dict[str, Any]:
        return {
            "start_new_session": True,
            "preexec_fn": _die_with_parent(self.stop_signal),
        }

    def recent_log(self) -> str:
        """The log written since the last start."""
        return log_tail(self.log_path, self._log_offset)


class DevRedis(_SupervisedServer, RedisProcess):
    """RedisProcess, supervised by devstack."""


class DevPostgres(_SupervisedServer, PostgresProcess):
    """PostgresProcess, supervised by devstack."""


class ServiceProcess:
    """`python -m <module>` as a child; its output goes to our stdout and to a log file."""

    def __init__(self, module: str, env: Mapping[str, str], log_path: Path) -> None:
        self.module = module
        self.name = module.replace("_", " ")  # "budget service", for messages
        self.env = dict(env)
        self.log_path = log_path
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # a traceback belongs in the tail too
            start_new_session=True,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )
        self._pump = threading.Thread(
            target=self._copy_output, name=f"{self.module}-log", daemon=True
        )
        self._pump.start()

    def _copy_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out: IO[bytes] | None = sys.stdout.buffer
        with self.log_path.open("ab") as log:
            for line in iter(self._proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                self.tail.append(line.decode("utf-8", errors="replace").rstrip("\n"))
                if out is not None:
                    try:
                        out.write(line)
                        out.flush()
                    except (BrokenPipeError, ValueError):
                        out = None  # stdout went away (e.g. `make run | head`); keep the file

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (the service drains in-flight calls), SIGKILL after `timeout`."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"the {self.name} did not stop within {timeout:g}s; killing it")
                proc.kill()
                proc.wait()
        self.join_output()
        return proc.returncode

    def join_output(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)


# --- the services' APIs -------------------------------------------------------------------------


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited on its own with code {code}"


def _channel(addr: str) -> grpc.Channel:
    # No HTTP proxy for a local service, whatever http_proxy says.
    return grpc.insecure_channel(dial_target(addr), options=[("grpc.enable_http_proxy", 0)])


def wait_serving(
    addr: str,
    service: ServiceProcess,
    stop: threading.Event,
    timeout: float,
    others: Sequence[ServiceProcess] = (),
) -> None:
    """Poll the gRPC health check until SERVING; bounded by `timeout`.

    `others` are services starting at the same time: if one of them dies meanwhile, that ends
    the wait too.
    """
    deadline = time.monotonic() + timeout
    with _channel(addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if stop.is_set():
                raise StopRequested
            for child in (service, *others):
                code = child.poll()
                if code is not None:
                    raise ChildDied(
                        f"the {child.name} {_exit_description(code)} while starting", child
                    )
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() >= deadline:
                raise ChildDied(
                    f"the {service.name} was not SERVING on {addr} within {timeout:g}s", service
                )
            time.sleep(POLL_INTERVAL)


def seed_demo(addr: str) -> list[tuple[pb.Budget, bool]]:
    """Create the demo budgets that do not exist yet; (budget, created) for each."""
    result: list[tuple[pb.Budget, bool]] = []
    with _channel(addr) as channel:
        admin = budget_pb2_grpc.BudgetAdminServiceStub(channel)  # type: ignore[no-untyped-call]
        for budget in DEMO_BUDGETS:
            try:
                found = admin.GetBudget(
                    pb.GetBudgetRequest(org=budget.org, budget_id=budget.id), timeout=RPC_TIMEOUT
                )
                result.append((found, False))
                continue
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise ChildDied(
                        f"seeding the demo org: GetBudget {budget.id} failed:"
                        f" {exc.code().name} {exc.details()}"
                    ) from exc
            try:
                created = admin.UpsertBudget(
                    pb.UpsertBudgetRequest(budget=budget),
                    timeout=RPC_TIMEOUT,
                    metadata=(("x-actor", SEED_ACTOR),),
                )
            except grpc.RpcError as exc:
                raise ChildDied(
                    f"seeding the demo org: UpsertBudget {budget.id} failed:"
                    f" {exc.code().name} {exc.details()}"
                ) from exc
            result.append((created, True))
    return result


# --- the stack ----------------------------------------------------------------------------------


def _usd(nanos: int) -> str:
    return f"${nanos // NANOS_PER_USD}.{nanos % NANOS_PER_USD // 10**7:02d}"


def _describe(budget: pb.Budget) -> str:
    scope = ",".join(f"{k}={v}" for k, v in sorted(budget.selector.items())) or "whole org"
    period = pb.Period.Name(budget.period).removeprefix("PERIOD_").lower()
    return f"{budget.id} ({scope}, {_usd(budget.limit_nanos)}/{period})"


def _grpcurl() -> str:
    if shutil.which("grpcurl"):
        return "grpcurl"
    bundled = Path(sys.executable).parent / "grpcurl"
    if bundled.exists():
        try:
            return str(bundled.relative_to(Path.cwd()))
        except ValueError:
            return str(bundled)
    return "grpcurl"


class DevStack:
    """Starts, watches and stops Redis, PostgreSQL, the pricing service and the budget service."""

    def __init__(self, config: DevConfig, stop: threading.Event) -> None:
        self.config = config
        self.stop = stop
        self.redis: DevRedis | None = None
        self.postgres: DevPostgres | None = None
        self.budget: ServiceProcess | None = None
        self.pricing: ServiceProcess | None = None
        self.redis_url = config.redis_url
        self.database_url = config.database_url

    @property
    def services(self) -> list[ServiceProcess]:
        """The services started so far, in stop order: the budget service first."""
        return [s for s in (self.budget, self.pricing) if s is not None]

    def run(self) -> int:
        """Start everything, serve until a stop signal; the process exit status."""
        failure: str | None = None
        at_fault: list[ServiceProcess] = []
        code = 0
        try:
            self._preflight()
            self._start_stores()
            self._start_services()
            assert self.budget is not None
            try:
                seeded = seed_demo(self.config.budget_addr)
            except ChildDied as exc:
                raise ChildDied(str(exc), self.budget) from exc
            self._banner(seeded)
            self._supervise()
        except StopRequested:
            pass
        except DevstackError as exc:
            failure, code = str(exc), 2
        except ChildDied as exc:
            failure, code = str(exc), 1
            if exc.service is not None:
                at_fault.append(exc.service)
        finally:
            # A service that exited on its own says why in its log, whatever failed first.
            at_fault += [s for s in self.services if s.poll() is not None and s not in at_fault]
            self._shutdown()
        if failure is not None:
            for service in at_fault:
                lines = "\n".join(service.tail) or "<no output>"
                failure += f"\n--- last lines of the {service.name}'s log ---\n{lines}"
            say(failure)
        return code

    def _preflight(self) -> None:
        c = self.config
        c.data_dir.mkdir(parents=True, exist_ok=True)
        wanted: list[tuple[str, str, int]] = []  # (setting, host, port) of what will listen
        if not c.redis_url:
            wanted.append(("DEV_REDIS_PORT", STORE_HOST, c.redis_port))
        if not c.database_url:
            wanted.append(("DEV_POSTGRES_PORT", STORE_HOST, c.postgres_port))
        wanted.append(("BUDGET_ADDR", *split_addr(c.budget_addr, "BUDGET_ADDR")))
        wanted.append(("PRICING_ADDR", *split_addr(c.pricing_addr, "PRICING_ADDR")))
        for i, (first, first_host, port) in enumerate(wanted):
            for second, second_host, other in wanted[i + 1 :]:
                if port == other and _hosts_overlap(first_host, second_host):
                    raise DevstackError(
                        f"{first} and {second} both use port {port}: give each its own"
                    )
        if not c.redis_url:
            check_port(
                STORE_HOST,
                c.redis_port,
                "devstack's Redis",
                "DEV_REDIS_PORT",
                "or set REDIS_URL to use a Redis of your own.",
            )
        if not c.database_url:
            check_port(
                STORE_HOST,
                c.postgres_port,
                "devstack's PostgreSQL",
                "DEV_POSTGRES_PORT",
                "or set DATABASE_URL to use a PostgreSQL of your own.",
            )
        host, port = split_addr(c.budget_addr, "BUDGET_ADDR")
        check_port(host, port, "the budget service", "BUDGET_ADDR", "")
        host, port = split_addr(c.pricing_addr, "PRICING_ADDR")
        check_port(host, port, "the pricing service", "PRICING_ADDR", "")

    def _start_stores(self) -> None:
        c = self.config
        if not c.redis_url:
            self.redis = DevRedis(
                c.data_dir / "redis", c.redis_port, appendfsync=c.redis_appendfsync, host=STORE_HOST
            )
            say(f"starting Redis on {STORE_HOST}:{c.redis_port} (data {self.redis.data_dir})")
            try:
                self.redis.start(timeout=REDIS_START_TIMEOUT)
            except RuntimeError as exc:
                raise DevstackError(f"Redis did not start: {exc}") from exc
            self.redis_url = self.redis.url
        if self.stop.is_set():
            raise StopRequested
        if not c.database_url:
            self.postgres = DevPostgres(c.data_dir / "postgres", c.postgres_port, host=STORE_HOST)
            say(
                f"starting PostgreSQL on {STORE_HOST}:{c.postgres_port}"
                f" (data {self.postgres.data_dir})"
            )
            try:
                self.postgres.start(timeout=POSTGRES_START_TIMEOUT)
            except RuntimeError as exc:
                raise DevstackError(f"PostgreSQL did not start: {exc}") from exc
            self.database_url = self.postgres.url
        if self.stop.is_set():
            raise StopRequested

    def _start_services(self) -> None:
        """Both services at once (their migrations take turns on a lock), then both SERVING."""
        c = self.config
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            BUDGET_ADDR=c.budget_addr,
            PRICING_ADDR=c.pricing_addr,
            LOG_FORMAT=c.log_format,
            PYTHONUNBUFFERED="1",
        )
        self.pricing = ServiceProcess(PRICING_MODULE, env, c.pricing_log)
        say(f"starting the pricing service on {c.pricing_addr}")
        self.pricing.start()
        self.budget = ServiceProcess(BUDGET_MODULE, env, c.service_log)
        say(f"starting the budget service on {c.budget_addr}")
        self.budget.start()
        # One deadline for both: they start side by side.
        deadline = time.monotonic() + SERVING_TIMEOUT
        for addr, service in ((c.pricing_addr, self.pricing), (c.budget_addr, self.budget)):
            others = [s for s in self.services if s is not service]
            remaining = max(deadline - time.monotonic(), POLL_INTERVAL)
            wait_serving(addr, service, self.stop, remaining, others)

    def _banner(self, seeded: list[tuple[pb.Budget, bool]]) -> None:
        c = self.config
        addr = dial_target(c.budget_addr)
        pricing_addr = dial_target(c.pricing_addr, "PRICING_ADDR")
        redis = (
            f"{self.redis_url}  data {self.redis.data_dir} (AOF, appendfsync {c.redis_appendfsync})"
            if self.redis
            else f"{self.redis_url}  (yours, from REDIS_URL)"
        )
        postgres = (
            f"{self.database_url}  data {self.postgres.data_dir}"
            if self.postgres
            else f"{self.database_url}  (yours, from DATABASE_URL)"
        )
        demo = ", ".join(
            f"{_describe(b)} {'created' if created else 'kept as it was'}" for b, created in seeded
        )
        request = f'{{"org":"{DEMO_ORG}","budget_id":"{DEMO_BUDGETS[0].id}"}}'
        price_request = f'{{"model":"{PRICE_EXAMPLE_MODEL}"}}'
        own = " and ".join(
            name
            for name, store in (("Redis", self.redis), ("PostgreSQL", self.postgres))
            if store is not None
        )
        stopping = (
            f"the budget service, then the pricing service drain, then {own} stop; data is kept"
            if own
            else "the budget service, then the pricing service drain and stop"
        )
        grpcurl = _grpcurl()
        print(
            f"\nbudget service ready on {addr}  (gRPC, plaintext, reflection on)\n"
            f"pricing service ready on {pricing_addr}  (gRPC, plaintext, reflection on)\n"
            f"  redis       {redis}\n"
            f"  postgresql  {postgres}\n"
            f"  service log {c.service_log.absolute()}\n"
            f"  pricing log {c.pricing_log.absolute()}\n"
            f"  demo org    {DEMO_ORG}: {demo}\n"
            f"  try         {grpcurl} -plaintext -d '{request}' {addr}"
            f" budget.v1.BudgetAdminService/GetBudgetStatus\n"
            f"  a price     {grpcurl} -plaintext -d '{price_request}' {pricing_addr}"
            f" pricing.v1.PricingService/GetPrice\n"
            f"  walkthrough docs/walkthrough.md\n"
            f"  stop        Ctrl-C ({stopping})\n",
            file=sys.stderr,
            flush=True,
        )

    def _supervise(self) -> None:
        """Wait for a stop signal, or for a child to exit on its own."""
        while not self.stop.wait(POLL_INTERVAL):
            for service in self.services:
                code = service.poll()
                if code is not None:
                    raise ChildDied(f"the {service.name} {_exit_description(code)}", service)
            for store in (self.redis, self.postgres):
                if store is not None and not store.running:
                    raise ChildDied(
                        f"{store.name} exited on its own; see {store.log_path}\n"
                        f"--- tail of {store.log_path} ---\n{store.recent_log()}"
                    )

    def _shutdown(self) -> None:
        """The budget service first (it drains), then the pricing service, then the stores.

        Idempotent.
        """
        timeout = self.config.shutdown_grace_seconds + SERVICE_STOP_MARGIN
        for service in self.services:
            if service.poll() is None:
                say(f"stopping the {service.name}")
            service.stop(timeout)
        for store in (self.redis, self.postgres):
            if store is not None and store.running:
                say(f"stopping {store.name}")
                store.stop(timeout=STORE_STOP_TIMEOUT)
            elif store is not None:
                store.stop()  # already exited: just clean up after it
        if self.redis or self.postgres:
            say(f"stopped; data kept in {self.config.data_dir.absolute()}")
        elif self.services:
            say("stopped")


# --- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    if args:
        print(USAGE, file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            os.write(2, f"\ndevstack: {signal.Signals(signum).name}: stopping\n".encode())
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    try:
        config = DevConfig.from_env(os.environ, stdout_is_tty=sys.stdout.isatty())
    except DevstackError as exc:
        say(str(exc))
        return 2
    return DevStack(config, stop).run()
