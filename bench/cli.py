"""`python -m bench`: budget calls per second against a trivial-RPC ceiling, in one run.

Phases, all on the same server stack and the same connected client processes:

1. ceiling    closed loop of grpc.health.v1.Health/Check: what gRPC in Python on this machine
              can do at all with these clients;
2. budget     closed loop of Reserve then its Commit (each call counted; unique reservation
              ids, amount-based), with Redis commandstats reset before and read after;
3. half load  open loop at half the budget phase's calls/s: Reserve latency when not saturated;
4. reserve    closed loop of Reserve alone, its own commandstats: Redis µs per reserve script;
              amount-based and token-based (`usage`, priced in the service from the pricing
              service's catalog) Reserves alternate in short slices of the window (amount,
              tokens, tokens, amount, ...), so whatever else slows the machine falls on both
              alike: calls/s of each, and tokens / amount;
5. scale      two more orgs on the same server: one of 10 budgets (org cap, team, 8 users) and
              one of 100,000 per-user budgets plus an org cap and a team budget (created in
              bulk: PostgreSQL, then Redis through the config scripts); closed loop of Reserve,
              each for a random user of the org (three budgets cover it in both), the two orgs
              alternating in short slices as in phase 4: calls/s of each, and 100k / 10;
6. scripts    reserve and commit scripts one at a time, no load (bench/probe.py).

The figures are printed next to their aims (and written with --json); nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import redis

from bench import client, probe, procfs, profiling
from bench.client import Phase, Result
from bench.stack import BenchError, Stack
from genproto.budget.v1 import budget_pb2 as pb

LIMIT_NANOS = 10**15  # 1,000,000 USD per month: never refuses within a run (2e6 nanos a call)
BUDGETS: list[tuple[str, dict[str, str]]] = [
    ("org-cap", {}),
    ("team-cap", {"team": client.SUBJECT["team"]}),
    ("vk-openai", {"project": client.SUBJECT["project"], "provider": client.SUBJECT["provider"]}),
    ("user-daily", {"user": client.SUBJECT["user"]}),
    ("model-cap", {"model": client.SUBJECT["model"]}),
]
AIMS = {
    "ratio_budget_to_ceiling": ">= 0.6",
    "half_load_reserve_p99_us": "< 2000",
    "redis_us_per_reserve_script": "< 15",
    "redis_us_per_reserve_script_unloaded": "< 15",
    "token_reserve_ratio": ">= 0.9",
    "scale_reserve_ratio": ">= 0.9",
}
SCALE_SMALL_USERS = 8  # the small org: org cap, team and 8 user budgets, 10 in all
PROBE_CALLS = 500  # phase 5: scripts one at a time
PHASE_LEAD_NS = 300_000_000  # time for a phase message to reach every client before it starts
OVERLAP_WARNING = 0.05  # reserve-only: share of calls overlapping the other kind worth a note


def _scale_budgets(org: str, users: int) -> list[pb.Budget]:
    """An org cap, a team budget and one budget per user (u000000, u000001, ...): a Reserve
    for one of the org's users is covered by three budgets, whatever the org's size."""
    common = {"org": org, "limit_nanos": LIMIT_NANOS, "period": pb.PERIOD_MONTH}
    return [
        pb.Budget(id="org-cap", **common),  # type: ignore[arg-type]
        pb.Budget(id="team-cap", selector={"team": client.SUBJECT["team"]}, **common),  # type: ignore[arg-type]
        *(
            pb.Budget(id=f"user-{i:06d}", selector={"user": f"u{i:06d}"}, **common)  # type: ignore[arg-type]
            for i in range(users)
        ),
    ]


# --- arguments ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure budget calls/s against a trivial-RPC ceiling on one server stack.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--concurrency", type=int, default=32, help="in-flight calls per client")
    p.add_argument("--seconds", type=float, default=5.0, help="measured window of each phase")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="warm-up before each window (default: min(1, seconds/2))",
    )
    p.add_argument(
        "--reserve-seconds",
        type=float,
        default=None,
        help="window of the reserve-only phase, amount and token Reserves alternating"
        " (default: max(2, 6 x seconds)), rounded down to whole groups of 4 slices",
    )
    p.add_argument(
        "--reserve-slice",
        type=float,
        default=0.15,
        help="reserve-only phase: seconds of each slice of one kind (amount or tokens)",
    )
    p.add_argument(
        "--reserve-guard",
        type=float,
        default=0.05,
        help="reserve-only phase: calls starting this soon in a slice are not counted for"
        " either kind (the other kind's calls are still completing)",
    )
    p.add_argument(
        "--scale-budgets",
        type=int,
        default=100_000,
        help="scale phase: per-user budgets of the large org (beside its org cap and team)",
    )
    p.add_argument(
        "--scale-seconds",
        type=float,
        default=None,
        help="window of the scale phase, the small and the large org alternating"
        " (default: max(2, 4 x seconds)), rounded down to whole groups of 4 slices",
    )
    p.add_argument(
        "--server-procs",
        type=int,
        default=1,
        help="budget service processes sharing the port (SO_REUSEPORT)",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=None,
        help="grpc channels (TCP connections) per client (default: server-procs),"
        " spread evenly over the service processes",
    )
    p.add_argument(
        "--budgets",
        type=int,
        default=1,
        choices=range(1, len(BUDGETS) + 1),
        metavar=f"1..{len(BUDGETS)}",
        help="budgets covering every request (org cap, then team, key+provider, user, model)",
    )
    p.add_argument("--log-level", default="warning", help="LOG_LEVEL of the service")
    p.add_argument(
        "--profile-server",
        type=Path,
        metavar="PATH",
        default=None,
        help="run the service under cProfile during the budget phase, write the"
        " stats (of service process 0) to PATH and print a summary",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    p.add_argument(
        "--keep-dir",
        action="store_true",
        help="keep the temporary folder (logs, data) instead of removing it",
    )
    args = p.parse_args(argv)
    for name in ("clients", "concurrency", "server_procs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    if args.warmup is None:
        args.warmup = min(1.0, args.seconds / 2)
    if args.reserve_seconds is None:
        args.reserve_seconds = max(2.0, 6 * args.seconds)
    if args.scale_seconds is None:
        args.scale_seconds = max(2.0, 4 * args.seconds)
    if not 0 <= args.reserve_guard < args.reserve_slice:
        p.error("--reserve-guard must be at least 0 and less than --reserve-slice")
    if args.scale_budgets < SCALE_SMALL_USERS:
        p.error(f"--scale-budgets must be at least {SCALE_SMALL_USERS}")
    pattern = len(client.SLICE_PATTERN)
    for name in ("reserve", "scale"):
        groups = int(getattr(args, f"{name}_seconds") / (pattern * args.reserve_slice) + 1e-9)
        if groups < 1:
            p.error(f"--{name}-seconds must hold {pattern} slices of --reserve-slice at least")
        setattr(args, f"{name}_slices", groups * pattern)
        setattr(args, f"{name}_seconds", round(groups * pattern * args.reserve_slice, 6))
    if args.channels is None:
        args.channels = args.server_procs
    return args


# --- client processes ---------------------------------------------------------------------


class Clients:
    """The client processes: started once, connected, then driven phase by phase."""

    def __init__(self) -> None:
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.placement: list[list[int]] = []  # per client: the service pid of each channel

    def start(self, count: int, make_config: Any) -> None:
        """Start `count` clients and wait until each is connected (close() undoes it all)."""
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs grpc
        for i in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=client.main,
                args=(child, make_config(i)),
                name=f"bench-client-{i}",
                daemon=True,
            )
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        for i in range(count):
            self.placement.append(self._receive(i, "ready", timeout=60.0))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def _receive(self, i: int, expected: str, timeout: float) -> Any:
        conn = self.conns[i]
        if not conn.poll(timeout):
            raise BenchError(f"client {i} did not answer within {timeout:.0f} s")
        try:
            kind, payload = conn.recv()
        except EOFError:
            raise BenchError(f"client {i} exited (code {self.procs[i].exitcode})") from None
        if kind == "error":
            raise BenchError(f"client {i} failed:\n{payload}")
        if kind != expected:
            raise BenchError(f"client {i} answered {kind!r}, expected {expected!r}")
        return payload

    def send(self, phases: list[Phase]) -> None:
        for i, (conn, phase) in enumerate(zip(self.conns, phases, strict=True)):
            try:
                conn.send(phase)
            except OSError as exc:
                raise BenchError(f"client {i} is gone ({exc})") from None

    def collect(self, timeout: float) -> list[Result]:
        return [self._receive(i, "result", timeout) for i in range(len(self.conns))]

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        deadline = time.monotonic() + 5.0
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()


# --- measuring ----------------------------------------------------------------------------


def percentile_us(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in microseconds (0 when empty)."""
    if not sorted_ns:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000.0


@dataclass
class CpuSample:
    at_ns: int
    roles: dict[str, float]
    threads: dict[str, float]
    machine: procfs.MachineCpu
    waits: dict[str, float]  # role -> seconds its main thread(s) waited for a CPU
    pressure: float  # PSI: seconds some task waited for a CPU


@dataclass
class PhaseOutcome:
    """One phase, merged over the clients."""

    name: str
    window_s: float
    counts: dict[str, int]
    latencies: dict[str, list[int]]  # sorted ns
    lags: list[int]  # sorted ns (open loop)
    errors: Counter[str]
    error_sample: str
    dropped: int
    cpu: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # reserve_ab: sorted ns
    slices: dict[int, int] = field(default_factory=dict)  # reserve_ab: slice -> calls counted
    overlapping: int = 0  # reserve_ab: calls completing in the other kind's counted time

    @property
    def calls(self) -> int:
        return sum(self.counts.values())

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.window_s

    def p(self, op: str, q: float) -> float:
        return percentile_us(self.latencies.get(op, []), q)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "window_s": self.window_s,
            "calls": self.counts,
            "calls_per_s": round(self.calls_per_s, 1),
            "latency_us": {
                op: {
                    "p50": self.p(op, 0.50),
                    "p90": self.p(op, 0.90),
                    "p99": self.p(op, 0.99),
                    "max": self.p(op, 1.0),
                }
                for op in self.latencies
            },
            "errors": dict(self.errors),
            "cpu": self.cpu,
        }
        if self.error_sample:
            out["error_sample"] = self.error_sample
        if self.lags:
            out["open_loop_start_lag_us"] = {
                "p50": percentile_us(self.lags, 0.5),
                "p99": percentile_us(self.lags, 0.99),
            }
            out["dropped_arrivals"] = self.dropped
        if self.redis:
            out["redis"] = self.redis
        return out


class Bench:
    """One run: the stack, the clients, the phases."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.org = f"bench-{uuid.uuid4().hex[:8]}"
        self.run_tag = uuid.uuid4().hex[:8]
        self.scale_orgs = (f"{self.org}-10", f"{self.org}-{args.scale_budgets}")
        self.scale_setup: dict[str, Any] = {}
        self.stack: Stack | None = None
        self.clients: Clients | None = None
        self.redis: redis.Redis | None = None
        self.profile_text = ""
        self.probe: dict[str, Any] = {}

    @contextlib.contextmanager
    def running(self) -> Iterator[Bench]:
        try:
            log(
                f"starting Redis, PostgreSQL, the pricing service and"
                f" {self.args.server_procs} budget service process(es) ..."
            )
            self.stack = Stack(
                server_procs=self.args.server_procs,
                log_level=self.args.log_level,
                profile=self.args.profile_server is not None,
                keep_dir=self.args.keep_dir,
            )
            self.stack.__enter__()
            if self.args.keep_dir:
                log(f"data and logs in {self.stack.root}")
            self.redis = redis.Redis.from_url(self.stack.redis.url, decode_responses=True)
            # Redis records every event slower than 1 ms (commands, AOF writes and fsyncs).
            self.redis.config_set("latency-monitor-threshold", 1)
            self.stack.upsert_budgets(self.org, BUDGETS[: self.args.budgets], LIMIT_NANOS)
            stack = self.stack
            log(f"starting {self.args.clients} client process(es) ...")
            self.clients = Clients()
            self.clients.start(
                self.args.clients,
                lambda i: client.Config(
                    index=i,
                    addr=stack.addr,
                    port=stack.port,
                    org=self.org,
                    run_tag=self.run_tag,
                    channels=self.args.channels,
                    server_pids=stack.service_pids,
                    scale_orgs=self.scale_orgs,
                    scale_users=(SCALE_SMALL_USERS, self.args.scale_budgets),
                ),
            )
            yield self
        finally:
            with _signals_ignored():
                if self.clients is not None:
                    self.clients.close()
                if self.redis is not None:
                    self.redis.close()
                if self.stack is not None:
                    self.stack.close()

    # --- one phase ------------------------------------------------------------------------

    def _cpu(self) -> CpuSample:
        assert self.stack is not None and self.clients is not None
        roles = {
            "service": sum(procfs.cpu_seconds(p) for p in self.stack.service_pids),
            "redis": procfs.cpu_seconds(self.stack.redis.pid or 0),
            "postgres": procfs.tree_cpu_seconds(self.stack.postgres.pid or 0),
            "clients": sum(procfs.cpu_seconds(p) for p in self.clients.pids),
            "bench": procfs.cpu_seconds(os.getpid()),
        }
        threads: dict[str, float] = {}
        for pid in self.stack.service_pids:
            for name, seconds in procfs.thread_cpu_seconds(pid).items():
                threads[name] = threads.get(name, 0.0) + seconds
        waits = {
            "service": sum(procfs.runqueue_wait_seconds(p) for p in self.stack.service_pids),
            "redis": procfs.runqueue_wait_seconds(self.stack.redis.pid or 0),
            "clients": sum(procfs.runqueue_wait_seconds(p) for p in self.clients.pids),
        }
        return CpuSample(
            time.perf_counter_ns(),
            roles,
            threads,
            procfs.machine_cpu(),
            waits,
            procfs.cpu_pressure_seconds(),
        )

    def phase(
        self,
        name: str,
        kind: str,
        window_s: float,
        *,
        rate_calls_per_s: float = 0.0,
        slice_s: float = 0.0,
        guard_s: float = 0.0,
        kinds: tuple[str, str] = client.TOKEN_KINDS,
        before_window: Any = None,
        during_window: Callable[[int], None] | None = None,
        after_window: Any = None,
    ) -> PhaseOutcome:
        """Run one phase on every client; CPU is sampled exactly around the window.

        `during_window(begin_ns)` runs in this process from the window's start (perf_counter_ns
        `begin_ns`, as the clients see it) and returns before its end.
        """
        assert self.clients is not None and self.stack is not None
        args = self.args
        n = args.clients
        start = time.perf_counter_ns() + PHASE_LEAD_NS
        warmup_ns = int(args.warmup * 1e9)
        window_ns = int(window_s * 1e9)
        phases = []
        for i in range(n):
            phase = Phase(
                kind,
                start,
                warmup_ns,
                window_ns,
                concurrency=args.concurrency,
                slice_ns=int(slice_s * 1e9),
                guard_ns=int(guard_s * 1e9),
                kinds=kinds,
            )
            if kind == "open":
                pairs_per_client = rate_calls_per_s / 2 / n  # a pair: Reserve + Commit
                phase.rate = pairs_per_client
                phase.offset_ns = int(i * 1e9 / pairs_per_client / n)  # interleave clients
            phases.append(phase)
        if before_window is not None:
            before_window()
        self.clients.send(phases)
        _sleep_until(start + warmup_ns)
        first = self._cpu()
        if during_window is not None:
            during_window(start + warmup_ns)
        _sleep_until(start + warmup_ns + window_ns)
        last = self._cpu()
        results = self.clients.collect(timeout=args.warmup + window_s + 60.0)
        if after_window is not None:
            after_window()
        self.stack.check_services()
        outcome = _merge(name, window_s, results)
        outcome.cpu = _cpu_use(first, last, outcome.calls)
        if outcome.errors:
            log(
                f"  {name}: {outcome.calls:,} calls ok, errors {dict(outcome.errors)}"
                f" (first: {outcome.error_sample})"
            )
        if outcome.calls == 0:
            raise BenchError(f"phase {name!r}: no call succeeded ({outcome.error_sample})")
        return outcome

    def _slice_cpu(self, begin_ns: int, slices: int) -> list[float]:
        """Service event-loop CPU seconds of each alternating slice, from its guard on."""
        assert self.stack is not None
        a = self.args
        pids = self.stack.service_pids
        slice_ns, guard_ns = int(a.reserve_slice * 1e9), int(a.reserve_guard * 1e9)
        used: list[float] = []
        for i in range(slices):
            at = begin_ns + i * slice_ns
            _sleep_until(at + guard_ns)
            before = sum(procfs.main_thread_run_seconds(p) for p in pids)
            _sleep_until(at + slice_ns)
            used.append(sum(procfs.main_thread_run_seconds(p) for p in pids) - before)
        return used

    def _commandstats(self) -> dict[str, Any]:
        assert self.redis is not None
        stats: dict[str, Any] = self.redis.info("commandstats")
        evalsha = stats.get("cmdstat_evalsha", {})
        return {
            "evalsha_calls": int(evalsha.get("calls", 0)),
            "evalsha_usec": int(evalsha.get("usec", 0)),
            "evalsha_usec_per_call": float(evalsha.get("usec_per_call", 0.0)),
            "other_commands": {
                k.removeprefix("cmdstat_"): int(v.get("calls", 0))
                for k, v in stats.items()
                if k != "cmdstat_evalsha"
            },
        }

    def _reset_redis_stats(self) -> None:
        assert self.redis is not None
        self.redis.config_resetstat()

    # --- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        args = self.args
        assert self.stack is not None
        log(
            f"phase 1/6 ceiling: Health/Check, {args.clients}x{args.concurrency} in flight,"
            f" {args.seconds:g} s"
        )
        ceiling = self.phase("ceiling", "ceiling", args.seconds)
        log(f"  {ceiling.calls_per_s:,.0f} calls/s")

        log(
            f"phase 2/6 budget: Reserve+Commit, {args.clients}x{args.concurrency} in flight,"
            f" {args.seconds:g} s"
        )
        budget_redis: dict[str, Any] = {}
        profiled = self.stack.services[0] if args.profile_server else None

        def before_budget() -> None:
            self._reset_redis_stats()
            if profiled is not None:
                profiled.signal(signal.SIGUSR1)

        def after_budget() -> None:
            budget_redis.update(self._commandstats())
            if profiled is not None:
                profiled.signal(signal.SIGUSR2)

        budget = self.phase(
            "budget", "budget", args.seconds, before_window=before_budget, after_window=after_budget
        )
        budget.redis = budget_redis
        log(
            f"  {budget.calls_per_s:,.0f} calls/s"
            f" (ratio {budget.calls_per_s / ceiling.calls_per_s:.2f})"
        )
        if profiled is not None and args.profile_server is not None:
            self.profile_text = _collect_profile(profiled.profile_path, args.profile_server)

        target = budget.calls_per_s / 2
        log(f"phase 3/6 half load: open loop at {target:,.0f} calls/s, {args.seconds:g} s")
        half = self.phase("half_load", "open", args.seconds, rate_calls_per_s=target)
        log(f"  {half.calls_per_s:,.0f} calls/s achieved")

        log(
            f"phase 4/6 reserve only, amount- and token-based ({client.SUBJECT['model']},"
            f" {client.RESERVE_INPUT_TOKENS}+{client.RESERVE_OUTPUT_TOKENS} tokens) alternating"
            f" every {args.reserve_slice * 1000:g} ms, {args.reserve_seconds:g} s"
            " (Redis commandstats)"
        )
        reserve_redis: dict[str, Any] = {}
        slice_cpu: list[float] = []
        reserve = self.phase(
            "reserve_only",
            "reserve_ab",
            args.reserve_seconds,
            slice_s=args.reserve_slice,
            guard_s=args.reserve_guard,
            before_window=self._reset_redis_stats,
            during_window=lambda begin_ns: slice_cpu.extend(
                self._slice_cpu(begin_ns, args.reserve_slices)
            ),
            after_window=lambda: reserve_redis.update(self._commandstats()),
        )
        reserve.redis = reserve_redis
        alternation = Alternation.of(
            reserve, args.reserve_slice, args.reserve_guard, slice_cpu, client.TOKEN_KINDS
        )
        low, high = alternation.interval()
        log(
            f"  {reserve.calls_per_s:,.0f} Reserve calls/s,"
            f" {reserve_redis['evalsha_usec_per_call']:.2f} µs Redis per reserve script;"
            f" amount {alternation.calls_per_s('amount'):,.0f}, tokens"
            f" {alternation.calls_per_s('tokens'):,.0f} calls/s: ratio {alternation.ratio:.3f}"
            f" (90% interval {low:.3f} - {high:.3f})"
        )
        if alternation.overlap > OVERLAP_WARNING:
            log(
                f"  note: {alternation.overlap:.0%} of the counted calls overlapped with the other"
                f" kind's (Reserve p50 {alternation.p('amount', 0.5) / 1000:.0f} ms): raise"
                " --reserve-guard and --reserve-slice"
            )

        scale, scaling = self._scale_phase()

        log(f"phase 6/6 scripts one at a time, no load: {PROBE_CALLS} reserves, then commits")
        assert self.stack is not None
        self.probe = probe.probe_scripts(self.stack.redis.url, self.org, PROBE_CALLS)
        log(
            f"  {self.probe['reserve']['usec_per_call']:.2f} µs Redis per reserve script,"
            f" {self.probe['commit']['usec_per_call']:.2f} per commit script,"
            f" {self.probe['empty']['usec_per_call']:.2f} per empty script"
        )

        return self._report(ceiling, budget, half, reserve, alternation, target, scale, scaling)

    def _scale_phase(self) -> tuple[PhaseOutcome, Alternation]:
        """Phase 5: Reserve calls/s on an org of 10 budgets against one of 100,000, same run."""
        args = self.args
        assert self.stack is not None
        small, large = self.scale_orgs
        n = args.scale_budgets
        log(
            f"phase 5/6 scale: creating an org of 10 budgets and one of {n:,} per-user budgets"
            " plus an org cap and a team budget (PostgreSQL, then Redis) ..."
        )
        rss_before = self.stack.service_resident_bytes()
        t0 = time.monotonic()
        self.stack.create_budgets(_scale_budgets(small, SCALE_SMALL_USERS))
        self.stack.create_budgets(_scale_budgets(large, n))
        created_s = time.monotonic() - t0
        t1 = time.monotonic()
        for org, users in ((small, SCALE_SMALL_USERS), (large, n)):
            self.stack.warm_org(
                pb.Subject(org=org, **{**client.SUBJECT, "user": f"u{users - 1:06d}"})  # type: ignore[arg-type]
            )
        loaded_s = time.monotonic() - t1
        rss_after = self.stack.service_resident_bytes()
        self.scale_setup = {
            "budgets": {"small": SCALE_SMALL_USERS + 2, "large": n + 2},
            "create_seconds": round(created_s, 2),
            "first_load_seconds": round(loaded_s, 2),
            # Resident memory the service processes grew by while loading both orgs (the cache,
            # and what the whole-org read left allocated), per budget of the large org.
            "service_rss_bytes_per_budget": round((rss_after - rss_before) / (n + 2)),
            "service_rss_mib": {
                "before": round(rss_before / 2**20, 1),
                "after": round(rss_after / 2**20, 1),
            },
        }
        log(
            f"  created in {created_s:.1f} s (validation, PostgreSQL COPY with audit rows, Redis"
            f" 1,000 a script); service processes read the orgs in {loaded_s:.1f} s; service"
            f" memory {rss_before / 2**20:,.0f} -> {rss_after / 2**20:,.0f} MiB"
            f" (~{self.scale_setup['service_rss_bytes_per_budget']:,} bytes per budget)"
        )
        log(
            f"  Reserve only, the two orgs alternating every {args.reserve_slice * 1000:g} ms,"
            f" {args.scale_seconds:g} s"
        )
        slice_cpu: list[float] = []
        scale = self.phase(
            "scale",
            "reserve_ab",
            args.scale_seconds,
            slice_s=args.reserve_slice,
            guard_s=args.reserve_guard,
            kinds=client.SCALE_KINDS,
            during_window=lambda begin_ns: slice_cpu.extend(
                self._slice_cpu(begin_ns, args.scale_slices)
            ),
        )
        scaling = Alternation.of(
            scale, args.reserve_slice, args.reserve_guard, slice_cpu, client.SCALE_KINDS
        )
        low, high = scaling.interval()
        log(
            f"  10 budgets {scaling.calls_per_s('small'):,.0f}, {n:,} budgets"
            f" {scaling.calls_per_s('large'):,.0f} Reserve calls/s: ratio {scaling.ratio:.3f}"
            f" (90% interval {low:.3f} - {high:.3f})"
        )
        return scale, scaling

    def _report(
        self,
        ceiling: PhaseOutcome,
        budget: PhaseOutcome,
        half: PhaseOutcome,
        reserve: PhaseOutcome,
        alternation: Alternation,
        target: float,
        scale: PhaseOutcome,
        scaling: Alternation,
    ) -> dict[str, Any]:
        assert self.redis is not None and self.stack is not None
        reserve_us = float(reserve.redis["evalsha_usec_per_call"])
        mixed_us = float(budget.redis["evalsha_usec_per_call"])
        figures = {
            "ceiling_calls_per_s": round(ceiling.calls_per_s, 1),
            "budget_calls_per_s": round(budget.calls_per_s, 1),
            "ratio_budget_to_ceiling": round(budget.calls_per_s / ceiling.calls_per_s, 4),
            "reserve_p50_us": budget.p("reserve", 0.50),
            "reserve_p99_us": budget.p("reserve", 0.99),
            "commit_p50_us": budget.p("commit", 0.50),
            "commit_p99_us": budget.p("commit", 0.99),
            "half_load_calls_per_s": round(half.calls_per_s, 1),
            "half_load_reserve_p50_us": half.p("reserve", 0.50),
            "half_load_reserve_p99_us": half.p("reserve", 0.99),
            "amount_reserve_calls_per_s": round(alternation.calls_per_s("amount"), 1),
            "amount_reserve_p50_us": alternation.p("amount", 0.50),
            "amount_reserve_p99_us": alternation.p("amount", 0.99),
            "token_reserve_calls_per_s": round(alternation.calls_per_s("tokens"), 1),
            "token_reserve_p50_us": alternation.p("tokens", 0.50),
            "token_reserve_p99_us": alternation.p("tokens", 0.99),
            "token_reserve_ratio": round(alternation.ratio, 4),
            "scale_small_reserve_calls_per_s": round(scaling.calls_per_s("small"), 1),
            "scale_large_reserve_calls_per_s": round(scaling.calls_per_s("large"), 1),
            "scale_reserve_ratio": round(scaling.ratio, 4),
            "redis_us_per_reserve_script": reserve_us,
            "redis_us_per_evalsha_budget_run": mixed_us,
            "redis_us_per_reserve_script_unloaded": self.probe["reserve"]["usec_per_call"],
            "redis_us_per_commit_script_unloaded": self.probe["commit"]["usec_per_call"],
            "redis_us_per_empty_script_unloaded": self.probe["empty"]["usec_per_call"],
            "reserve_script_in_empty_scripts": round(
                self.probe["reserve"]["usec_per_call"]
                / max(self.probe["empty"]["usec_per_call"], 0.01),
                1,
            ),
        }
        a = self.args
        return {
            "figures": figures,
            "aims": AIMS,
            "derived": {
                # Whole-stack CPU per call (service + Redis + PostgreSQL + clients), ceiling over
                # budget: the ratio the bench would see if its processes had the machine to
                # themselves and were CPU-bound. Less sensitive to other load than the ratio.
                "cpu_normalized_ratio": _cpu_ratio(ceiling, budget),
                # budget-run evalsha is half reserve, half commit scripts
                "redis_us_per_commit_script_estimate": round(2 * mixed_us - reserve_us, 2),
                "reserve_only_calls_per_s": round(reserve.calls_per_s, 1),
                # The reserve-only phase's comparison of amount- and token-based Reserves.
                "token_reserve": alternation.summary(),
                # The scale phase's comparison of an org of 10 budgets with one of 100,000.
                "scale": {
                    **scaling.summary(),
                    **self.scale_setup,
                    "small_reserve_p50_us": scaling.p("small", 0.50),
                    "small_reserve_p99_us": scaling.p("small", 0.99),
                    "large_reserve_p50_us": scaling.p("large", 0.50),
                    "large_reserve_p99_us": scaling.p("large", 0.99),
                },
                "half_load_target_calls_per_s": round(target, 1),
                "redis_latency_events_over_1ms": self._latency_events(),
            },
            "machine": machine_info(self.redis),
            "params": {
                "clients": a.clients,
                "concurrency_per_client": a.concurrency,
                "seconds": a.seconds,
                "warmup_seconds": a.warmup,
                "reserve_seconds": a.reserve_seconds,
                "scale_seconds": a.scale_seconds,
                "scale_budgets": a.scale_budgets,
                "reserve_slice_seconds": a.reserve_slice,
                "reserve_guard_seconds": a.reserve_guard,
                "token_reserve": {
                    "model": client.SUBJECT["model"],
                    "provider": client.SUBJECT["provider"],
                    "input_tokens": client.RESERVE_INPUT_TOKENS,
                    "output_tokens": client.RESERVE_OUTPUT_TOKENS,
                },
                "server_procs": a.server_procs,
                "channels_per_client": a.channels,
                "budgets_per_request": a.budgets,
                "service_log_level": a.log_level,
                "org": self.org,
                "reserve_nanos": client.RESERVE_NANOS,
                "actual_nanos": client.ACTUAL_NANOS,
                "connections_per_service_process": self._connections(),
                "profiled": a.profile_server is not None,
            },
            "phases": {p.name: p.summary() for p in (ceiling, budget, half, reserve, scale)},
            "profile": self.profile_text,
        }

    def _latency_events(self) -> dict[str, dict[str, int]]:
        """Redis LATENCY LATEST: event -> latest and max duration (ms) over the run."""
        assert self.redis is not None
        try:
            rows = self.redis.execute_command("LATENCY", "LATEST")  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return {}
        return {str(r[0]): {"latest_ms": int(r[2]), "max_ms": int(r[3])} for r in rows}

    def _connections(self) -> list[int]:
        assert self.stack is not None
        owners = procfs.server_connections(self.stack.service_pids, self.stack.port)
        return [len(owners[pid]) for pid in self.stack.service_pids]


@dataclass
class Alternation:
    """An alternating phase as a comparison of two kinds of Reserve: amount- against token-based
    (reserve-only phase), or the org of 10 budgets against the org of 100,000 (scale phase).

    The window is cut in slices, each sending one kind (client.SLICE_PATTERN: base, other,
    other, base, ...). A kind's calls are those that start in its slices past the guard, by
    when the other kind's calls have completed; in a closed loop a call starts as one completes,
    so they are what the service completed of that kind in that time. The service's event-loop
    CPU is read over the same stretches. Slices of a fraction of a second put both kinds under
    the same conditions, even when other work on the machine changes from one second to the next.
    """

    slice_s: float
    guard_s: float
    counts: list[int]  # per slice: calls counted
    cpu_s: list[float]  # per slice: service event-loop CPU seconds from the guard on
    latencies: dict[str, list[int]]  # kind -> sorted ns of its counted calls
    overlapping: int  # calls that completed in the other kind's slice, past its guard
    kinds: tuple[str, str]  # (base, other): the ratio is other / base

    @classmethod
    def of(
        cls,
        outcome: PhaseOutcome,
        slice_s: float,
        guard_s: float,
        cpu_s: list[float],
        kinds: tuple[str, str],
    ) -> Alternation:
        counts = [outcome.slices.get(i, 0) for i in range(len(cpu_s))]
        return cls(slice_s, guard_s, counts, cpu_s, outcome.by_kind, outcome.overlapping, kinds)

    def kind(self, index: int) -> str:
        return client.slice_kind(self.kinds, index)

    def _slices(self, kind: str) -> list[int]:
        return [i for i in range(len(self.counts)) if self.kind(i) == kind]

    def calls_per_s(self, kind: str) -> float:
        slices = self._slices(kind)
        seconds = len(slices) * (self.slice_s - self.guard_s)
        return sum(self.counts[i] for i in slices) / seconds if seconds else 0.0

    @property
    def ratio(self) -> float:
        """Reserve calls/s of the other kind / of the base kind (tokens / amount, large /
        small)."""
        base = self.calls_per_s(self.kinds[0])
        return self.calls_per_s(self.kinds[1]) / base if base else 0.0

    def cpu_us_per_call(self, kind: str) -> float:
        slices = self._slices(kind)
        calls = sum(self.counts[i] for i in slices)
        return sum(self.cpu_s[i] for i in slices) * 1e6 / calls if calls else 0.0

    def p(self, kind: str, q: float) -> float:
        return percentile_us(self.latencies.get(kind, []), q)

    @property
    def overlap(self) -> float:
        """Share of the counted calls that overlapped with the other kind's (past the guard)."""
        counted = sum(self.counts)
        return self.overlapping / counted if counted else 0.0

    def interval(
        self, level: float = 0.9, resamples: int = 2000, block_s: float = 1.0
    ) -> tuple[float, float]:
        """Bootstrap interval of `ratio` over blocks of ~1 s of slice pairs (fixed seed).

        Each pair of slices holds one of each kind; blocks keep neighbouring pairs together.
        It shows the noise within the run, not changes on the machine from one run to the next.
        """
        pairs = []
        for j in range(len(self.counts) // 2):
            b, o = (2 * j, 2 * j + 1) if self.kind(2 * j) == self.kinds[0] else (2 * j + 1, 2 * j)
            pairs.append((self.counts[b], self.counts[o]))
        size = max(1, round(block_s / (2 * self.slice_s)))
        blocks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        rng = random.Random(0)
        ratios = []
        for _ in range(resamples):
            base = other = 0
            for block in (rng.choice(blocks) for _ in blocks):
                base += sum(b for b, _ in block)
                other += sum(o for _, o in block)
            ratios.append(other / base if base else 0.0)
        ratios.sort()
        tail = (1 - level) / 2
        return ratios[int(tail * (resamples - 1))], ratios[int((1 - tail) * (resamples - 1))]

    def summary(self) -> dict[str, Any]:
        low, high = self.interval()
        base_kind, other_kind = self.kinds
        base, other = self.cpu_us_per_call(base_kind), self.cpu_us_per_call(other_kind)
        return {
            "slice_s": self.slice_s,
            "guard_s": self.guard_s,
            "slices": len(self.counts),
            "calls_counted": {k: sum(self.counts[i] for i in self._slices(k)) for k in self.kinds},
            "ratio_interval_90": [round(low, 4), round(high, 4)],
            # Calls of the other kind still completing past the guard, as a share of the calls
            # counted: they pull the ratio towards 1 by about this share of its distance to 1.
            "overlap_fraction": round(self.overlap, 4),
            "service_cpu_us_per_call": {
                base_kind: round(base, 1),
                other_kind: round(other, 1),
                f"{other_kind}_extra": round(other - base, 1),
            },
        }


def _cpu_ratio(ceiling: PhaseOutcome, budget: PhaseOutcome) -> float:
    roles = ("service", "redis", "postgres", "clients")
    per_ceiling = sum(ceiling.cpu["cpu_us_per_call"][r] for r in roles)
    per_budget = sum(budget.cpu["cpu_us_per_call"][r] for r in roles)
    return round(per_ceiling / per_budget, 3) if per_budget else 0.0


def _merge(name: str, window_s: float, results: list[Result]) -> PhaseOutcome:
    latencies: dict[str, list[int]] = {}
    lags: list[int] = []
    errors: Counter[str] = Counter()
    sample = ""
    dropped = 0
    by_kind: dict[str, list[int]] = {}
    slices: Counter[int] = Counter()
    overlapping = 0
    for r in results:
        for op, values in r.latencies.items():
            latencies.setdefault(op, []).extend(values)
        lags.extend(r.lags)
        errors.update(r.errors)
        sample = sample or r.error_sample
        dropped += r.dropped
        for kind, values in r.by_kind.items():
            by_kind.setdefault(kind, []).extend(values)
        slices.update(r.slices)
        overlapping += r.overlapping
    for merged in (*latencies.values(), *by_kind.values()):
        merged.sort()
    lags.sort()
    counts = {op: len(v) for op, v in latencies.items()}
    outcome = PhaseOutcome(name, window_s, counts, latencies, lags, errors, sample, dropped)
    outcome.by_kind = by_kind
    outcome.slices = dict(slices)
    outcome.overlapping = overlapping
    return outcome


def _cpu_use(first: CpuSample, last: CpuSample, calls: int) -> dict[str, Any]:
    """Cores busy per role over the window, and CPU µs per call."""
    wall = (last.at_ns - first.at_ns) / 1e9
    out: dict[str, Any] = {"wall_s": round(wall, 3)}
    cores: dict[str, float] = {}
    per_call: dict[str, float] = {}
    for role in first.roles:
        used = last.roles[role] - first.roles[role]
        cores[role] = round(used / wall, 3)
        per_call[role] = round(used * 1e6 / calls, 1) if calls else 0.0
    out["cores_busy"] = cores
    out["cpu_us_per_call"] = per_call
    out["service_threads_cores_busy"] = {
        name: round((last.threads.get(name, 0.0) - first.threads.get(name, 0.0)) / wall, 3)
        for name in last.threads
        if last.threads.get(name, 0.0) - first.threads.get(name, 0.0) > 0
    }
    # Share of the window each role's event-loop thread was ready to run but had no CPU: on an
    # oversubscribed machine this, not the code, is where tail latency comes from.
    out["waiting_for_cpu_fraction"] = {
        role: round((last.waits[role] - first.waits[role]) / wall, 3) for role in first.waits
    }
    out["cpu_pressure_some_fraction"] = round((last.pressure - first.pressure) / wall, 3)
    total = last.machine.total - first.machine.total
    busy = (last.machine.busy - first.machine.busy) / total if total else 0.0
    out["machine_busy_fraction"] = round(busy, 3)
    # Whatever else ran on the machine meanwhile (other sessions, the kernel's own work):
    # a large value means the figures were taken on a shared, contended machine.
    cores["other"] = round(max(0.0, busy * (os.cpu_count() or 1) - sum(cores.values())), 3)
    return out


def _collect_profile(source: Path | None, target: Path) -> str:
    """Wait for the profiled service to write its stats, copy them, and summarize."""
    assert source is not None
    deadline = time.monotonic() + 30.0
    while not source.exists():
        if time.monotonic() > deadline:
            return "(the service did not write its profile in time)"
        time.sleep(0.05)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return profiling.summarize(target)


# --- output -------------------------------------------------------------------------------


def machine_info(client_: redis.Redis | None = None) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
    }
    if client_ is not None:
        with contextlib.suppress(redis.RedisError):
            info["redis_server"] = client_.info("server").get("redis_version")
    return info


def _count(n: int) -> str:
    """100000 -> "100k"; 2500 -> "2,500"."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def _aim(value: float, aim: str) -> str:
    op, _, bound = aim.partition(" ")
    met = value >= float(bound) if op == ">=" else value < float(bound)
    return f"aim {aim:<8} {'met' if met else 'NOT met'}"


def render(report: dict[str, Any]) -> str:
    f = report["figures"]
    m = report["machine"]
    p = report["params"]
    d = report["derived"]
    ph = report["phases"]
    tok = p["token_reserve"]
    alt = d["token_reserve"]
    sc = d["scale"]
    cpu_us = alt["service_cpu_us_per_call"]
    lines = [
        "",
        "Budget service bench",
        f"machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable) {m['cpu_model']},"
        f" Linux {m['kernel']}, Python {m['python']}, grpcio {m['grpcio']},"
        f" redis {m.get('redis_server', '?')}, load avg at start {m['load_average_1m']}",
        f"params:  clients={p['clients']} concurrency={p['concurrency_per_client']}/client"
        f" seconds={p['seconds']:g} (warm-up {p['warmup_seconds']:g}, reserve-only"
        f" {p['reserve_seconds']:g} s in {p['reserve_slice_seconds'] * 1000:g} ms slices)"
        f" server-procs={p['server_procs']}"
        f" channels={p['channels_per_client']}/client budgets/request={p['budgets_per_request']}"
        f" service LOG_LEVEL={p['service_log_level']}"
        f" connections/service process={p['connections_per_service_process']}"
        + (" PROFILED (slower)" if p["profiled"] else ""),
        "",
        f"{'figure':<46}{'value':>14}   aim",
        f"{'-' * 46}{'-' * 14}   {'-' * 22}",
    ]
    rows: list[tuple[str, str, str]] = [
        ("ceiling: Health/Check calls/s", f"{f['ceiling_calls_per_s']:,.0f}", ""),
        ("budget: Reserve+Commit calls/s", f"{f['budget_calls_per_s']:,.0f}", ""),
        (
            "RATIO budget / ceiling",
            f"{f['ratio_budget_to_ceiling']:.3f}",
            _aim(f["ratio_budget_to_ceiling"], AIMS["ratio_budget_to_ceiling"]),
        ),
        (
            "Reserve p50 / p99 (µs), full load",
            f"{f['reserve_p50_us']:,.0f} / {f['reserve_p99_us']:,.0f}",
            "",
        ),
        (
            "Commit p50 / p99 (µs), full load",
            f"{f['commit_p50_us']:,.0f} / {f['commit_p99_us']:,.0f}",
            "",
        ),
        (
            f"Reserve p50 / p99 (µs), half load ({f['half_load_calls_per_s']:,.0f}/s)",
            f"{f['half_load_reserve_p50_us']:,.0f} / {f['half_load_reserve_p99_us']:,.0f}",
            _aim(f["half_load_reserve_p99_us"], AIMS["half_load_reserve_p99_us"]) + " (p99)",
        ),
        (
            "reserve-only, amount: Reserve calls/s",
            f"{f['amount_reserve_calls_per_s']:,.0f}",
            "",
        ),
        (
            "reserve-only, tokens: Reserve calls/s",
            f"{f['token_reserve_calls_per_s']:,.0f}",
            f"({tok['model']}, {tok['input_tokens']}+{tok['output_tokens']} tokens)",
        ),
        (
            "RATIO tokens / amount Reserve calls/s",
            f"{f['token_reserve_ratio']:.3f}",
            _aim(f["token_reserve_ratio"], AIMS["token_reserve_ratio"])
            + f" (90% interval {alt['ratio_interval_90'][0]:.3f} -"
            f" {alt['ratio_interval_90'][1]:.3f})",
        ),
        (
            "scale: 10 budgets, Reserve calls/s",
            f"{f['scale_small_reserve_calls_per_s']:,.0f}",
            "(org cap, team, 8 users; 3 cover each)",
        ),
        (
            f"scale: {_count(p['scale_budgets'])} budgets, Reserve calls/s",
            f"{f['scale_large_reserve_calls_per_s']:,.0f}",
            f"(org cap, team, {p['scale_budgets']:,} users)",
        ),
        (
            f"RATIO {_count(p['scale_budgets'])} budgets / 10 budgets Reserve calls/s",
            f"{f['scale_reserve_ratio']:.3f}",
            _aim(f["scale_reserve_ratio"], AIMS["scale_reserve_ratio"])
            + f" (90% interval {sc['ratio_interval_90'][0]:.3f} -"
            f" {sc['ratio_interval_90'][1]:.3f})",
        ),
        (
            "Reserve p50 / p99 (µs), reserve-only, amount",
            f"{f['amount_reserve_p50_us']:,.0f} / {f['amount_reserve_p99_us']:,.0f}",
            "",
        ),
        (
            "Reserve p50 / p99 (µs), reserve-only, tokens",
            f"{f['token_reserve_p50_us']:,.0f} / {f['token_reserve_p99_us']:,.0f}",
            "",
        ),
        (
            "Redis µs per reserve script, full load",
            f"{f['redis_us_per_reserve_script']:.2f}",
            _aim(f["redis_us_per_reserve_script"], AIMS["redis_us_per_reserve_script"]),
        ),
        (
            "Redis µs per reserve script, 1 in flight",
            f"{f['redis_us_per_reserve_script_unloaded']:.2f}",
            _aim(
                f["redis_us_per_reserve_script_unloaded"],
                AIMS["redis_us_per_reserve_script_unloaded"],
            )
            + " (no load)",
        ),
        (
            "Redis µs per commit script, 1 in flight",
            f"{f['redis_us_per_commit_script_unloaded']:.2f}",
            "",
        ),
        (
            "Redis µs per empty script (return 1), baseline",
            f"{f['redis_us_per_empty_script_unloaded']:.2f}",
            "",
        ),
        (
            "reserve script / empty script",
            f"{f['reserve_script_in_empty_scripts']:.1f}x",
            "(the Redis figure as a same-run ratio)",
        ),
        (
            "Redis µs per evalsha, budget run (mixed)",
            f"{f['redis_us_per_evalsha_budget_run']:.2f}",
            f"(commit script ~{d['redis_us_per_commit_script_estimate']:.2f} µs)",
        ),
    ]
    for label, value, aim in rows:
        lines.append(f"{label:<46}{value:>14}   {aim}")
    half = ph["half_load"]
    lag = half.get("open_loop_start_lag_us", {})
    lines += [
        "",
        f"half load: target {d['half_load_target_calls_per_s']:,.0f} calls/s; client start lag"
        f" p50/p99 {lag.get('p50', 0):,.0f}/{lag.get('p99', 0):,.0f} µs;"
        f" dropped arrivals {half.get('dropped_arrivals', 0)}",
        f"reserve-only closed loop: {d['reserve_only_calls_per_s']:,.0f} Reserve calls/s, the"
        f" kinds alternating in {alt['slices']} slices of {alt['slice_s'] * 1000:g} ms (amount,"
        f" tokens, tokens, amount, ...); a kind's calls are those starting"
        f" {alt['guard_s'] * 1000:g} ms or more into its slices (overlap with the other kind"
        f" {alt['overlap_fraction']:.1%})",
        f"service event-loop CPU µs per Reserve: amount {cpu_us['amount']:,.0f},"
        f" tokens {cpu_us['tokens']:,.0f} ({cpu_us['tokens_extra']:+,.0f} to price the tokens)",
        f"scale: {sc['budgets']['large']:,} budgets created in {sc['create_seconds']:g} s"
        f" (PostgreSQL COPY with audit rows, then Redis 1,000 a script), read by the service in"
        f" {sc['first_load_seconds']:g} s; service memory"
        f" {sc['service_rss_mib']['before']:,.0f} -> {sc['service_rss_mib']['after']:,.0f} MiB"
        f" (~{sc['service_rss_bytes_per_budget']:,} bytes per budget); Reserve p50/p99 µs"
        f" 10 budgets {sc['small_reserve_p50_us']:,.0f}/{sc['small_reserve_p99_us']:,.0f},"
        f" {sc['budgets']['large']:,} budgets"
        f" {sc['large_reserve_p50_us']:,.0f}/{sc['large_reserve_p99_us']:,.0f};"
        f" service event-loop CPU µs per Reserve {sc['service_cpu_us_per_call']['small']:,.0f}"
        f" / {sc['service_cpu_us_per_call']['large']:,.0f}",
        f"CPU-normalized ratio (whole-stack CPU µs per call, ceiling / budget):"
        f" {d['cpu_normalized_ratio']:.3f}  (the ratio if nothing else ran on the machine)",
        "",
        "CPU over each measured window (cores busy | CPU µs per call):",
        f"  {'phase':<13}{'calls/s':>9}  {'service':>16}{'redis':>16}{'postgres':>16}"
        f"{'clients':>16}{'other procs':>13}  machine busy",
    ]
    for name, phase in ph.items():
        cpu = phase["cpu"]
        cores, per = cpu["cores_busy"], cpu["cpu_us_per_call"]
        cells = "".join(
            f"{cores[r]:>9.2f} |{per[r]:>5.0f}" for r in ("service", "redis", "postgres", "clients")
        )
        lines.append(
            f"  {name:<13}{phase['calls_per_s']:>9,.0f}  {cells}"
            f"{cores['other']:>13.2f}   {cpu['machine_busy_fraction']:.0%}"
        )
    lines.append(
        "  waiting for a CPU, share of the window (event-loop threads of service / redis /"
        " clients summed; PSI some):"
    )
    for name, phase in ph.items():
        w = phase["cpu"]["waiting_for_cpu_fraction"]
        lines.append(
            f"    {name:<13}{w['service']:>6.0%}{w['redis']:>6.0%}{w['clients']:>6.0%}"
            f"{phase['cpu']['cpu_pressure_some_fraction']:>6.0%}"
        )
    threads = ph["budget"]["cpu"]["service_threads_cores_busy"]
    if threads:
        top = sorted(threads.items(), key=lambda kv: -kv[1])[:6]
        lines.append(
            "  service threads in budget phase (cores): "
            + ", ".join(f"{n}={c:.2f}" for n, c in top)
        )
    if d["redis_latency_events_over_1ms"]:
        events = ", ".join(
            f"{name} max {e['max_ms']} ms" for name, e in d["redis_latency_events_over_1ms"].items()
        )
        lines.append(f"  Redis events over 1 ms during the run: {events}")
    errors = {n: ph[n]["errors"] for n in ph if ph[n]["errors"]}
    if errors:
        lines.append(f"errors: {errors}")
    if report.get("profile"):
        lines += [
            "",
            "service profile, budget phase (cProfile, event-loop thread CPU):",
            report["profile"],
        ]
    lines.append("")
    return "\n".join(lines)


# --- plumbing -----------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.perf_counter_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Cleanup is not interrupted by a second Ctrl-C (every wait in it is bounded)."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    bench = Bench(args)
    try:
        with bench.running():
            report = bench.run()
    except KeyboardInterrupt:
        log("interrupted: every process the bench started is stopped")
        return 130
    except RuntimeError as exc:  # BenchError, or a store that would not start (devstack)
        log(f"bench failed: {exc}")
        return 1
    print(render(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"figures written to {args.json}")
    return 0
