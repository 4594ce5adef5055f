"""End to end: `python -m devstack` (what `make run` runs), the grpcurl walkthrough, stop, restart.

devstack runs Redis, PostgreSQL, the budget service and the pricing service; both services must
answer, and Ctrl-C must stop all four in order.

The walkthrough test runs every ```sh block of docs/walkthrough.md with the venv's grpcurl and
compares the answer with the block documented under it, so the walkthrough cannot go stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack import free_port
from devstack._process import child_pids, pid_alive
from devstack.dev import port_in_use

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"
DOC_ADDR = "127.0.0.1:50051"
DOC_PRICING_ADDR = "127.0.0.1:50052"
SERVICE_MODULES = ("budget_service", "pricing_service")  # `python -m <module>` children

START_TIMEOUT = 120.0  # first start: initdb, migrations, then SERVING
STOP_TIMEOUT = 60.0  # each service's 5 s grace (+ margin), then Redis and PostgreSQL
COMMAND_TIMEOUT = 30.0
PREFLIGHT_TIMEOUT = 30.0

# Values that change from run to run (times, catalog versions); compared by presence only.
RUN_DEPENDENT_FIELDS = frozenset(
    {"expires_at", "created_at", "updated_at", "period_start", "period_end", "price_version"}
    | {"expiresAt", "createdAt", "updatedAt", "periodStart", "periodEnd", "priceVersion"}
)
STATUS_BUDGETS = ("demo-monthly", "demo-team-search", "demo-user-u42-daily")

pytestmark = pytest.mark.slow


# --- the walkthrough ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One ```sh block of the walkthrough and the output block documented under it."""

    line: int
    command: str
    expected: str

    def argv(self, addr: str, pricing_addr: str = DOC_PRICING_ADDR) -> list[str]:
        """The command for the venv's grpcurl, aimed at `addr` instead of the doc's address."""
        args = shlex.split(self.command.replace("\\\n", " "), comments=True)
        assert args and args[0] == "grpcurl", f"line {self.line}: not a grpcurl command"
        targets = args.count(DOC_ADDR) + args.count(DOC_PRICING_ADDR)
        assert targets == 1, (
            f"line {self.line}: the command must target {DOC_ADDR} or {DOC_PRICING_ADDR}"
        )
        where = {DOC_ADDR: addr, DOC_PRICING_ADDR: pricing_addr}
        return [str(GRPCURL), *(where.get(a, a) for a in args[1:])]

    @property
    def expected_exit_code(self) -> int:
        """0, or grpcurl's 64 + gRPC code for an error the doc shows."""
        match = re.search(r"^\s*Code: (\w+)$", self.expected, re.M)
        if match:  # grpcurl's plain error: "Code: ResourceExhausted"
            name = re.sub(r"(?<!^)(?=[A-Z])", "_", match.group(1)).upper()
            return 64 + int(grpc.StatusCode[name].value[0])
        parsed = _json_or_none(self.expected)
        if isinstance(parsed, dict) and isinstance(parsed.get("code"), int) and "message" in parsed:
            return 64 + int(parsed["code"])  # grpcurl -format-error
        return 0


# README blocks may sit inside list items, indented.
README_FENCE = re.compile(r"^[ \t]*```([\w-]*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def walkthrough_steps(text: str) -> list[Step]:
    blocks = [
        (text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in FENCE.finditer(text)
    ]
    steps = []
    for i, (line, lang, body) in enumerate(blocks):
        if lang != "sh":
            continue
        assert i + 1 < len(blocks), f"line {line}: a ```sh block needs its output block after it"
        out_line, out_lang, output = blocks[i + 1]
        assert out_lang in ("json", "text"), (
            f"line {out_line}: the block after the command of line {line} must be its output"
            f" (```json or ```text), not ```{out_lang}"
        )
        steps.append(Step(line, body, output))
    return steps


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def normalized(value: Any) -> Any:
    """JSON with run-dependent values replaced by a marker (present, value ignored)."""
    if isinstance(value, dict):
        return {
            k: "<varies>" if k in RUN_DEPENDENT_FIELDS else normalized(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def grpcurl_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "grpc_proxy"):  # fmt: skip
        env.pop(name, None)
    return env


def run_grpcurl(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=grpcurl_env(),
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def check_step(step: Step, addr: str, pricing_addr: str = DOC_PRICING_ADDR) -> None:
    """Run one documented command; its exit status and answer must be the documented ones."""
    result = run_grpcurl(step.argv(addr, pricing_addr))
    # grpcurl prints answers on stdout and errors (also with -format-error) on stderr.
    actual = (result.stdout + result.stderr).strip()
    where = f"docs/walkthrough.md line {step.line}: {step.command.strip()}"
    assert result.returncode == step.expected_exit_code, (
        f"{where}\nexit status {result.returncode}, documented {step.expected_exit_code}\n{actual}"
    )
    documented = _json_or_none(step.expected)
    if documented is not None:
        answer = _json_or_none(actual)
        assert answer is not None, f"{where}\ndocumented JSON, got:\n{actual}"
        assert normalized(answer) == normalized(documented), (
            f"{where}\nanswer differs from the documented output:\n{actual}"
        )
    else:
        lines = {line.rstrip() for line in actual.splitlines()}
        missing = [
            line
            for line in step.expected.splitlines()
            if line.strip() and line.rstrip() not in lines
        ]
        assert not missing, f"{where}\nmissing lines {missing} in the answer:\n{actual}"


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def check_gpt_4o_price(result: subprocess.CompletedProcess[str]) -> None:
    """GetPrice openai/gpt-4o answered from the bundled catalog (values may change, not shape)."""
    assert result.returncode == 0, f"GetPrice openai/gpt-4o: {result.stdout}{result.stderr}"
    price = json.loads(result.stdout)
    assert (price["provider"], price["model"]) == ("openai", "gpt-4o"), price
    assert price["prices"]["input"] and price["prices"]["output"], price
    assert int(price["version"]) >= 1, price


def budget_status(addr: str, budget_id: str) -> Any:
    request = json.dumps({"org": "demo", "budget_id": budget_id})
    result = run_grpcurl(
        [str(GRPCURL), "-plaintext", "-d", request, addr,
         "budget.v1.BudgetAdminService/GetBudgetStatus"]
    )  # fmt: skip
    assert result.returncode == 0, f"GetBudgetStatus {budget_id}: {result.stderr}"
    return json.loads(result.stdout)


# --- the devstack process -----------------------------------------------------------------------


class Devstack:
    """`python -m devstack` as a subprocess, with its output in files."""

    def __init__(self, env: dict[str, str], addr: str, logs: Path, name: str) -> None:
        self.env = env
        self.addr = addr
        self.pricing_addr = env["PRICING_ADDR"]
        self.stdout_path = logs / f"{name}.stdout"
        self.stderr_path = logs / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_children: set[int] = set()

    def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devstack"], cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        def tail(path: Path) -> str:
            return path.read_text(errors="replace")[-6000:] if path.exists() else ""

        return (
            f"--- devstack stderr ---\n{tail(self.stderr_path)}\n"
            f"--- devstack stdout ---\n{tail(self.stdout_path)}"
        )

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        """Both services SERVING and the banner printed, within `timeout`."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        for addr in (self.addr, self.pricing_addr):
            self._wait_health(addr, deadline, timeout)
        # SERVING comes before the demo org is seeded; the banner comes after.
        while "budget service ready on" not in self.stderr_path.read_text():
            code = self.proc.poll()
            assert code is None, f"devstack exited with {code} while seeding\n{self.output()}"
            assert time.monotonic() < deadline, f"no banner within {timeout:g}s\n{self.output()}"
            time.sleep(0.1)
        self.seen_children |= set(self.process_tree())

    def _wait_health(self, addr: str, deadline: float, timeout: float) -> None:
        assert self.proc is not None
        options = [("grpc.enable_http_proxy", 0)]
        with grpc.insecure_channel(addr, options=options) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                code = self.proc.poll()
                assert code is None, f"devstack exited with {code} while starting\n{self.output()}"
                with contextlib.suppress(grpc.RpcError):
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                assert time.monotonic() < deadline, (
                    f"{addr} not SERVING within {timeout:g}s\n{self.output()}"
                )
                time.sleep(0.2)

    def banner_command(self, label: str) -> list[str]:
        """The banner's command on the line `label` (e.g. "a price"), for the venv's grpcurl."""
        for line in self.stderr_path.read_text().splitlines():
            if line.strip().startswith(f"{label} "):
                args = shlex.split(line.strip().removeprefix(label))
                assert Path(args[0]).name == "grpcurl", line
                return [str(GRPCURL), *args[1:]]
        pytest.fail(f"no {label!r} line in the banner\n{self.output()}")

    def process_tree(self) -> dict[int, str]:
        """pid -> command name of everything devstack runs (Redis, PostgreSQL, the services)."""
        assert self.proc is not None
        tree: dict[int, str] = {}
        todo = [self.proc.pid]
        while todo:
            for pid in child_pids(todo.pop()):
                with contextlib.suppress(OSError):
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    modules = [m for m in SERVICE_MODULES if m.encode() in argv]
                    tree[pid] = modules[0] if modules else comm
                    todo.append(pid)
        return tree

    def interrupt(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGINT, as Ctrl-C sends it; the exit status."""
        assert self.proc is not None
        self.seen_children |= set(self.process_tree())
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"devstack did not exit within {timeout:g}s of SIGINT\n{self.output()}")

    def kill(self) -> None:
        """Teardown: SIGKILL devstack and anything it started that is still alive."""
        if self.proc is not None and self.proc.poll() is None:
            self.seen_children |= set(self.process_tree())
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.seen_children:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def devstacks() -> Iterator[list[Devstack]]:
    """Devstacks registered here are killed at teardown, even when the test failed."""
    started: list[Devstack] = []
    try:
        yield started
    finally:
        for stack in started:
            stack.kill()


def devstack_env(
    data_dir: Path, redis_port: int, pg_port: int, addr: str, pricing_addr: str
) -> dict[str, str]:
    env = grpcurl_env()
    for name in ("REDIS_URL", "DATABASE_URL", "LOG_FORMAT"):
        env.pop(name, None)
    env.update(
        BUDGET_DATA_DIR=str(data_dir),
        DEV_REDIS_PORT=str(redis_port),
        DEV_POSTGRES_PORT=str(pg_port),
        BUDGET_ADDR=addr,
        PRICING_ADDR=pricing_addr,
        METRICS_ADDR=f"127.0.0.1:{free_port()}",
        SHUTDOWN_GRACE_SECONDS="5",
    )
    return env


# --- tests --------------------------------------------------------------------------------------


def readme_grpcurl_commands() -> list[str]:
    """Every grpcurl line of the README's ```sh blocks."""
    text = (ROOT / "README.md").read_text()
    return [
        line.strip()
        for m in README_FENCE.finditer(text)
        if m.group(1) == "sh"
        for line in m.group(2).splitlines()
        if line.strip().startswith("grpcurl ")
    ]


def readme_budgetctl_commands() -> list[str]:
    """Every budgetctl line of the README's ```sh blocks (with any VAR=value prefix)."""
    text = (ROOT / "README.md").read_text()
    return [
        line.strip()
        for m in README_FENCE.finditer(text)
        if m.group(1) == "sh"
        for line in m.group(2).splitlines()
        if ".venv/bin/budgetctl " in line
    ]


def run_readme_budgetctl(
    command: str, addrs: tuple[str, str], redis_port: int, pg_port: int
) -> None:
    """Run a README budgetctl line against a devstack on other ports than the defaults."""
    args = shlex.split(command)
    env = dict(os.environ)
    while "=" in args[0]:
        name, _, value = args.pop(0).partition("=")
        env[name] = value.replace(":6390/", f":{redis_port}/").replace(":5439/", f":{pg_port}/")
    assert args[0] == ".venv/bin/budgetctl", command
    addr, pricing_addr = addrs
    argv = [sys.executable, "-m", "budgetctl", "--addr", addr, "--pricing-addr", pricing_addr,
            *args[1:]]  # fmt: skip
    result = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"README: {command}\n{result.stdout}{result.stderr}"


def test_readme_shows_the_two_commands_and_grpcurl_calls() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make run" in text[:2000] and "make test" in text[:2000]
    assert len(readme_grpcurl_commands()) >= 9


def test_walkthrough_parses() -> None:
    steps = walkthrough_steps(WALKTHROUGH.read_text())
    assert len(steps) >= 12
    assert {s.expected_exit_code for s in steps} == {0, 72}


def test_make_run_walkthrough_stop_and_restart(tmp_path: Path, devstacks: list[Devstack]) -> None:
    steps = walkthrough_steps(WALKTHROUGH.read_text())
    redis_port, pg_port = free_port(), free_port()
    addr, pricing_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = devstack_env(tmp_path / "data", redis_port, pg_port, addr, pricing_addr)

    first = Devstack(env, addr, tmp_path, "first")
    devstacks.append(first)
    first.start()
    first.wait_serving()

    # The pricing service answers, with the bundled catalog, as the banner shows.
    price_command = first.banner_command("a price")
    assert pricing_addr in price_command and "pricing.v1.PricingService/GetPrice" in price_command
    assert json.loads(price_command[price_command.index("-d") + 1]) == {"model": "openai/gpt-4o"}
    check_gpt_4o_price(run_grpcurl(price_command))

    for step in steps:
        check_step(step, addr, pricing_addr)

    # Reservation ids are idempotency keys: running an admitted Reserve again answers the same
    # (a refusal holds nothing and is not recorded: a retry is decided afresh).
    reserves = [
        s for s in steps if "BudgetService/Reserve" in s.command and s.expected_exit_code == 0
    ]
    assert len(reserves) >= 2
    for step in reserves:
        check_step(step, addr)
    before = {b: normalized(budget_status(addr, b)) for b in STATUS_BUDGETS}
    assert before["demo-monthly"]["spent_nanos"] == "20000000"  # the walkthrough's spend

    # Ctrl-C: exit 0, and nothing left running or listening.
    children = first.process_tree()
    names = sorted(set(children.values()))
    assert {"redis-server", "postgres", *SERVICE_MODULES} <= set(names), names
    assert first.interrupt() == 0, first.output()
    alive = {pid: name for pid, name in children.items() if pid_alive(pid)}
    assert not alive, f"still running after devstack exited: {alive}"
    for port in (redis_port, pg_port, port_of(addr), port_of(pricing_addr)):
        assert not port_in_use("127.0.0.1", port), f"port {port} still in use"
    stdout = first.stdout_path.read_text()
    assert '"event": "server.stopped"' in stdout  # drained, not killed
    assert '"event": "pricing.stopped"' in stdout
    stderr = first.stderr_path.read_text()
    order = [
        stderr.index(f"stopping {what}")
        for what in ("the budget service", "the pricing service", "redis", "post")
    ]
    assert order == sorted(order), stderr

    # A second start reuses the data: budgets (not re-seeded) and spend are still there.
    second = Devstack(env, addr, tmp_path, "second")
    devstacks.append(second)
    second.start()
    second.wait_serving()
    assert "kept as it was" in second.stderr_path.read_text()
    after = {b: normalized(budget_status(addr, b)) for b in STATUS_BUDGETS}
    assert after == before
    assert after["demo-monthly"]["budget"]["version"] == "1"
    # The reservation records came back with Redis's AOF: a retry still answers the same.
    check_step(reserves[0], addr)
    # The README's first-screen commands work as written too.
    for command in readme_grpcurl_commands():
        result = run_grpcurl(Step(0, command, "").argv(addr, pricing_addr))
        assert result.returncode == 0, f"README: {command}\n{result.stdout}{result.stderr}"
        assert _json_or_none(result.stdout) is not None, f"README: {command}\n{result.stdout}"
    # And its budgetctl lines: reports, and a reconcile that finds the ledger equal to Redis.
    budgetctl_lines = readme_budgetctl_commands()
    assert len(budgetctl_lines) >= 3
    for command in budgetctl_lines:
        run_readme_budgetctl(command, (addr, pricing_addr), redis_port, pg_port)
    assert second.interrupt() == 0, second.output()


@pytest.mark.parametrize(
    "taken", ["DEV_REDIS_PORT", "DEV_POSTGRES_PORT", "BUDGET_ADDR", "PRICING_ADDR"]
)
def test_port_in_use_names_the_setting(tmp_path: Path, taken: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        ports = {"DEV_REDIS_PORT": free_port(), "DEV_POSTGRES_PORT": free_port(),
                 "BUDGET_ADDR": free_port(), "PRICING_ADDR": free_port(), taken: port}  # fmt: skip
        env = devstack_env(
            tmp_path / "data", ports["DEV_REDIS_PORT"], ports["DEV_POSTGRES_PORT"],
            f"127.0.0.1:{ports['BUDGET_ADDR']}", f"127.0.0.1:{ports['PRICING_ADDR']}",
        )  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "devstack"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=PREFLIGHT_TIMEOUT, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"port {port} " in result.stderr
    assert f"set {taken} to a free one" in result.stderr
    assert not (tmp_path / "data" / "redis").exists()  # nothing was started


def test_budget_and_pricing_addr_on_one_port_is_refused(tmp_path: Path) -> None:
    port = free_port()
    env = devstack_env(
        tmp_path / "data", free_port(), free_port(), f"127.0.0.1:{port}", f"0.0.0.0:{port}"
    )
    result = subprocess.run(
        [sys.executable, "-m", "devstack"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=PREFLIGHT_TIMEOUT, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"BUDGET_ADDR and PRICING_ADDR both use port {port}" in result.stderr
    assert not (tmp_path / "data" / "redis").exists()


def test_a_dead_pricing_service_stops_everything(tmp_path: Path, devstacks: list[Devstack]) -> None:
    addr, pricing_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = devstack_env(tmp_path / "data", free_port(), free_port(), addr, pricing_addr)
    stack = Devstack(env, addr, tmp_path, "dies")
    devstacks.append(stack)
    stack.start()
    stack.wait_serving()
    assert stack.proc is not None
    children = stack.process_tree()
    pricing = [pid for pid, name in children.items() if name == "pricing_service"]
    assert len(pricing) == 1, children
    os.kill(pricing[0], signal.SIGKILL)
    try:
        code = stack.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"devstack did not exit within {STOP_TIMEOUT:g}s\n{stack.output()}")
    assert code == 1, stack.output()
    stderr = stack.stderr_path.read_text()
    assert "the pricing service was killed by SIGKILL" in stderr, stderr
    tail = stderr.split("--- last lines of the pricing service's log ---", 1)
    assert len(tail) == 2 and "pricing.started" in tail[1], stderr
    # The budget service was stopped as on Ctrl-C (it drained), and so were the stores.
    assert '"event": "server.stopped"' in stack.stdout_path.read_text()
    alive = {pid: name for pid, name in children.items() if pid_alive(pid)}
    assert not alive, f"still running after devstack exited: {alive}"
    for port in (int(env["DEV_REDIS_PORT"]), int(env["DEV_POSTGRES_PORT"]),
                 port_of(addr), port_of(pricing_addr)):  # fmt: skip
        assert not port_in_use("127.0.0.1", port), f"port {port} still in use"
