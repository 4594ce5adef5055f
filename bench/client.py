"""The load-generating client processes.

Each client is a separate process (multiprocessing, spawn) with its own uvloop event loop and
grpc.aio channel(s). It stays connected for the whole run and takes one phase at a time from
the parent over a pipe:

- closed loop: `concurrency` tasks, each calling again as soon as its call returns;
- open loop: calls started on a fixed schedule (a given rate), whatever the answers do.

Every phase has the same shape: wait for a start instant shared by all clients (perf_counter_ns
is CLOCK_MONOTONIC, one clock for every process on Linux), run a warm-up, then a measured
window. A call counts, with its latency, when it completes inside the window, so calls/s is
completions in the window divided by its length. Latencies are perf_counter_ns around each
awaited call, in nanoseconds, sent back raw; the parent merges them and takes percentiles.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import random
import signal
import time
import traceback
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
import uvloop
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import procfs
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc

CALL_TIMEOUT = 30.0
# An open-loop phase stops starting calls once this many are outstanding in one client: the
# server has fallen behind, and piling up more only measures the client's queue.
MAX_OUTSTANDING = 20_000
HOLD_TTL_SECONDS = 3600  # holds left by the reserve-only phase must outlive the run

# The subject every bench request names (the org is per run).
SUBJECT = {
    "team": "team-bench",
    "project": "vk-bench",
    "user": "user-bench",
    "provider": "openai",
    # A model of the pricing service's bundled catalog: token-based Reserves are priced with it.
    # Amount-based calls name it too, so both kinds cover the same budgets.
    "model": "gpt-4o",
}
RESERVE_NANOS = 2_000_000  # 0.002 USD: a small chat completion's estimate
ACTUAL_NANOS = 1_500_000
# The token-based Reserve's estimate: prompt tokens and the output cap (gpt-4o: 0.011 USD).
RESERVE_INPUT_TOKENS = 1200
RESERVE_OUTPUT_TOKENS = 800


@dataclass(frozen=True)
class Config:
    """What a client process needs to know, fixed for the run."""

    index: int
    addr: str
    port: int
    org: str
    run_tag: str
    channels: int
    server_pids: list[int]
    # the scale phase: two orgs on the same server, one of few budgets and one of many; each
    # Reserve names a random one of the org's users (user budgets u000000, u000001, ...)
    scale_orgs: tuple[str, str] = ("", "")
    scale_users: tuple[int, int] = (0, 0)


@dataclass
class Phase:
    """One phase, as the parent sends it."""

    # "ceiling", "budget", "reserve", "reserve_ab" (closed loop) or "open" (budget, open loop)
    kind: str
    start_ns: int  # perf_counter_ns at which every client starts (warm-up first)
    warmup_ns: int
    window_ns: int
    concurrency: int = 1
    rate: float = 0.0  # open loop: Reserve+Commit pairs per second from this client
    offset_ns: int = 0  # open loop: this client's first arrival after the warm-up starts
    # reserve_ab: from the window's start, slices of this length, each of one of `kinds`
    # (SLICE_PATTERN)
    slice_ns: int = 0
    # reserve_ab: a call counts for its kind when it starts at least this long after its slice
    # does (by then the calls of the slice before have completed: the service does one kind)
    guard_ns: int = 0
    kinds: tuple[str, str] = ("amount", "tokens")


# reserve_ab: slice i sends Reserves of kinds[SLICE_PATTERN[i % 4]]: each pair of slices has one
# of each, and which goes first alternates. The kinds: amount- or token-based Reserves (the
# reserve-only phase), or Reserves on the scale phase's org of few ("small") or many ("large")
# budgets.
SLICE_PATTERN = (0, 1, 1, 0)
TOKEN_KINDS = ("amount", "tokens")
SCALE_KINDS = ("small", "large")


def slice_kind(kinds: tuple[str, str], index: int) -> str:
    """The kind of Reserve slice `index` sends."""
    return kinds[SLICE_PATTERN[index % len(SLICE_PATTERN)]]


@dataclass
class Result:
    """What a client measured in one phase's window."""

    window_ns: int
    latencies: dict[str, array[int]] = field(
        default_factory=dict
    )  # op -> ns, completions in window
    lags: array[int] = field(default_factory=lambda: array("q"))  # open loop: start - scheduled, ns
    errors: Counter[str] = field(default_factory=Counter)  # "op:CODE" -> calls, whole phase
    error_sample: str = ""  # the first error's details
    dropped: int = 0  # open loop: arrivals not started (too many outstanding)
    # reserve_ab: kind ("amount", "small", ...) -> ns of the calls counted for it (by start time)
    by_kind: dict[str, array[int]] = field(default_factory=dict)
    slices: dict[int, int] = field(default_factory=dict)  # reserve_ab: slice -> calls counted
    # reserve_ab: calls that completed in a slice of the other kind, past its guard
    overlapping: int = 0


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the parent dies (no orphans if it is killed)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(conn: Connection, config: Config) -> None:
    """Entry point of a client process: connect, then run phases until told to stop."""
    # Ctrl-C reaches the whole process group; the parent decides when clients stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    client = Client(config)
    try:
        loop.run_until_complete(client.connect())
        conn.send(("ready", client.placement))
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent is gone
                break
            if message is None:
                break
            conn.send(("result", loop.run_until_complete(client.run(message))))
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        try:
            loop.run_until_complete(client.close())
        finally:
            loop.close()


class Client:
    """One client process's channels, stubs and phase loops."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.channels: list[grpc.aio.Channel] = []
        self.placement: list[int] = []  # server pid of each channel (0 if unknown)
        self._ids = itertools.count()
        self._subject = pb.Subject(org=config.org, **SUBJECT)  # type: ignore[arg-type]
        self._ttl = duration_pb2.Duration(seconds=HOLD_TTL_SECONDS)
        self._usage = pb.Usage(
            input_tokens=RESERVE_INPUT_TOKENS, output_tokens=RESERVE_OUTPUT_TOKENS
        )

    async def connect(self) -> None:
        """Open the channels, each on its own TCP connection, spread evenly over the servers."""
        servers = self.config.server_pids
        for i in range(self.config.channels):
            target = servers[(self.config.index + i) % len(servers)] if len(servers) > 1 else 0
            channel, pid = await self._connect_to(target)
            self.channels.append(channel)
            self.placement.append(pid)
        self._health = [health_pb2_grpc.HealthStub(c).Check for c in self.channels]
        budget_stubs = [budget_pb2_grpc.BudgetServiceStub(c) for c in self.channels]  # type: ignore[no-untyped-call]
        self._reserve = [s.Reserve for s in budget_stubs]
        self._commit = [s.Commit for s in budget_stubs]

    async def _connect_to(self, target_pid: int) -> tuple[grpc.aio.Channel, int]:
        """A connected channel; with several server processes, one accepted by `target_pid`.

        The service processes share the port (SO_REUSEPORT) and the kernel picks one per
        connection by a hash of the addresses, so we reconnect until the right one took it.
        """
        for _ in range(64):
            before = procfs.socket_inodes()
            channel = grpc.aio.insecure_channel(
                self.config.addr,
                # Its own subchannel pool: a TCP connection of its own, not one shared.
                options=[("grpc.use_local_subchannel_pool", 1)],
            )
            await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT)
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT
            )
            if not target_pid:
                return channel, 0
            owner = self._owner(procfs.socket_inodes() - before)
            if owner == target_pid:
                return channel, owner
            await channel.close(None)
        raise RuntimeError(f"client {self.config.index}: could not reach server pid {target_pid}")

    def _owner(self, new_inodes: set[int]) -> int:
        """Server pid that accepted the connection whose client-side socket is in `new_inodes`."""
        sockets = procfs.tcp_sockets()
        ports = {
            s.local_port
            for s in sockets
            if s.inode in new_inodes
            and s.remote_port == self.config.port
            and s.state == procfs.TCP_ESTABLISHED
        }
        peers = procfs.server_connections(self.config.server_pids, self.config.port)
        for pid, remote_ports in peers.items():
            if ports & set(remote_ports):
                return pid
        return 0

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)

    # --- phases ---------------------------------------------------------------------------

    async def run(self, phase: Phase) -> Result:
        delay = (phase.start_ns - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        begin = phase.start_ns + phase.warmup_ns
        end = begin + phase.window_ns
        recorder = _Recorder(begin, end)
        if phase.kind == "open":
            await self._open_loop(phase, recorder, end)
        elif phase.kind == "reserve_ab":
            op = self._alternating(phase.slice_ns, phase.guard_ns, phase.kinds)
            await asyncio.gather(
                *(self._closed_slot(op, slot, recorder, end) for slot in range(phase.concurrency))
            )
        else:
            op = {
                "ceiling": self._check,
                "budget": self._reserve_commit,
                "reserve": self._reserve_only,
            }[phase.kind]
            await asyncio.gather(
                *(self._closed_slot(op, slot, recorder, end) for slot in range(phase.concurrency))
            )
        return recorder.result(phase.window_ns)

    async def _closed_slot(self, op: Any, slot: int, recorder: _Recorder, end: int) -> None:
        channel = slot % len(self.channels)
        while time.perf_counter_ns() < end:
            await op(channel, recorder)

    async def _open_loop(self, phase: Phase, recorder: _Recorder, end: int) -> None:
        interval = 1e9 / phase.rate
        next_at = float(phase.start_ns + phase.offset_ns)
        tasks: set[asyncio.Task[None]] = set()
        n = 0
        while next_at < end:
            now = time.perf_counter_ns()
            if now < next_at:
                await asyncio.sleep((next_at - now) / 1e9)
                continue
            while next_at <= now and next_at < end:  # everything due (timers tick in ms)
                if len(tasks) >= MAX_OUTSTANDING:
                    if recorder.begin <= next_at:
                        recorder.dropped += 1
                else:
                    task = asyncio.create_task(
                        self._reserve_commit(n % len(self.channels), recorder, int(next_at))
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                n += 1
                next_at += interval
        if tasks:
            await asyncio.gather(*tasks)

    async def _check(self, channel: int, recorder: _Recorder) -> None:
        request = health_pb2.HealthCheckRequest()
        t0 = time.perf_counter_ns()
        try:
            await self._health[channel](request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            recorder.error("check", exc)
            return
        recorder.add("check", t0, time.perf_counter_ns())

    def _reserve_request(self) -> pb.ReserveRequest:
        rid = f"bench-{self.config.run_tag}-{self.config.index}-{next(self._ids)}"
        return pb.ReserveRequest(
            reservation_id=rid, subject=self._subject, amount_nanos=RESERVE_NANOS, ttl=self._ttl
        )

    def _token_reserve_request(self) -> pb.ReserveRequest:
        """The same Reserve, estimated as tokens: the service prices them with SUBJECT's model."""
        rid = f"bench-{self.config.run_tag}-{self.config.index}-{next(self._ids)}"
        return pb.ReserveRequest(
            reservation_id=rid, subject=self._subject, usage=self._usage, ttl=self._ttl
        )

    async def _reserve_only(self, channel: int, recorder: _Recorder) -> None:
        request = self._reserve_request()
        t0 = time.perf_counter_ns()
        try:
            await self._reserve[channel](request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            recorder.error("reserve", exc)
            return
        recorder.add("reserve", t0, time.perf_counter_ns())

    def _scale_request(self, which: int) -> pb.ReserveRequest:
        """An amount-based Reserve on one of the scale phase's orgs, for a random user of it."""
        rid = f"bench-{self.config.run_tag}-{self.config.index}-{next(self._ids)}"
        subject = pb.Subject(
            org=self.config.scale_orgs[which],
            **{**SUBJECT, "user": f"u{random.randrange(self.config.scale_users[which]):06d}"},  # type: ignore[arg-type]
        )
        return pb.ReserveRequest(
            reservation_id=rid, subject=subject, amount_nanos=RESERVE_NANOS, ttl=self._ttl
        )

    def _alternating(self, slice_ns: int, guard_ns: int, kinds: tuple[str, str]) -> Any:
        """A Reserve of the kind of the slice it starts in (reserve_ab): amount- or token-based,
        or on the scale phase's small or large org.

        Each call in the window counts as "reserve", as in the other phases. It also counts for
        its kind, with its slice, when it started in the window and past the slice's guard.
        """
        make: dict[str, Callable[[], pb.ReserveRequest]] = {
            "amount": self._reserve_request,
            "tokens": self._token_reserve_request,
            "small": lambda: self._scale_request(0),
            "large": lambda: self._scale_request(1),
        }

        async def op(channel: int, recorder: _Recorder) -> None:
            t0 = time.perf_counter_ns()
            index, into = divmod(t0 - recorder.begin, slice_ns)
            kind = slice_kind(kinds, index)
            try:
                await self._reserve[channel](make[kind](), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                recorder.error(f"reserve_{kind}", exc)
                return
            t1 = time.perf_counter_ns()
            recorder.add("reserve", t0, t1)
            if index >= 0 and into >= guard_ns and t0 < recorder.end:
                recorder.add_by_kind(kind, t0, t1, index)
            done_in, done_into = divmod(t1 - recorder.begin, slice_ns)
            if (
                recorder.begin <= t1 < recorder.end
                and done_into >= guard_ns
                and slice_kind(kinds, done_in) != kind
            ):
                recorder.overlapping += 1  # in the other kind's counted time

        return op

    async def _reserve_commit(
        self, channel: int, recorder: _Recorder, scheduled_ns: int | None = None
    ) -> None:
        request = self._reserve_request()
        t0 = time.perf_counter_ns()
        if scheduled_ns is not None and scheduled_ns >= recorder.begin:
            recorder.lags.append(t0 - scheduled_ns)
        try:
            await self._reserve[channel](request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            recorder.error("reserve", exc)
            return
        t1 = time.perf_counter_ns()
        recorder.add("reserve", t0, t1)
        commit = pb.CommitRequest(
            org=self.config.org, reservation_id=request.reservation_id, actual_nanos=ACTUAL_NANOS
        )
        t2 = time.perf_counter_ns()
        try:
            await self._commit[channel](commit, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            recorder.error("commit", exc)
            return
        recorder.add("commit", t2, time.perf_counter_ns())


class _Recorder:
    """Latencies of the calls that complete inside [begin, end]."""

    def __init__(self, begin: int, end: int) -> None:
        self.begin = begin
        self.end = end
        self.latencies: dict[str, array[int]] = {}
        self.lags = array("q")
        self.errors: Counter[str] = Counter()
        self.error_sample = ""
        self.dropped = 0
        self.by_kind: dict[str, array[int]] = {}
        self.slices: dict[int, int] = {}
        self.overlapping = 0

    def add_by_kind(self, kind: str, t0: int, t1: int, index: int) -> None:
        """A call counted by when it started (in slice `index`), wherever it completed."""
        lat = self.by_kind.get(kind)
        if lat is None:
            lat = self.by_kind[kind] = array("q")
        lat.append(t1 - t0)
        self.slices[index] = self.slices.get(index, 0) + 1

    def add(self, op: str, t0: int, t1: int) -> None:
        if self.begin <= t1 <= self.end:
            lat = self.latencies.get(op)
            if lat is None:
                lat = self.latencies[op] = array("q")
            lat.append(t1 - t0)

    def error(self, op: str, exc: grpc.aio.AioRpcError) -> None:
        self.errors[f"{op}:{exc.code().name}"] += 1
        if not self.error_sample:
            self.error_sample = f"{op}: {exc.code().name}: {exc.details()}"

    def result(self, window_ns: int) -> Result:
        return Result(
            window_ns,
            self.latencies,
            self.lags,
            self.errors,
            self.error_sample,
            self.dropped,
            self.by_kind,
            self.slices,
            self.overlapping,
        )
