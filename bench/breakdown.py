"""`python -m bench.breakdown`: where a budget call's CPU goes inside the service, step by step.

No profiler (which inflates pure-Python code many times): each step runs alone, in this
process, on uvloop, against a real Redis (AOF on), and is timed with this thread's CPU clock
(Redis's own work happens in its process and is not counted) and with the wall clock. The
budget service's own objects are used as they are (handler, engine, scripts, config cache);
nothing in budget_service is changed.

Steps, from the whole handler down to its parts:
  handler Reserve / Commit          BudgetService.Reserve/Commit (rpc wrapper, validation,
                                    engine, response), without gRPC
  handler Reserve, Redis faked      the same with Scripts.run answering a canned reply: the
                                    service's Python work apart from Redis
  scripts.run reserve               redis-py EVALSHA + json.loads of the reply
  redis-py EVALSHA trivial script   the redis-py client's cost of one command
  raw RESP EVALSHA trivial script   a minimal asyncio+hiredis client doing the same: what a
                                    lean client path costs
  pieces                            fingerprint, subject_pairs, pack_command, json.loads,
                                    response build
Each Redis step is also run with 64 calls in flight (as under load) where it matters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import hiredis
import uvloop

from bench import client
from budget_service.api.gateway import BudgetService, _fingerprint, balances_to_proto
from budget_service.config.sync import ConfigSync
from budget_service.hotpath import keys, store
from budget_service.hotpath.budgets import BudgetConfig, subject_pairs
from budget_service.hotpath.config_cache import ConfigCache
from budget_service.hotpath.engine import Engine
from devstack import RedisProcess, free_port
from genproto.budget.v1 import budget_pb2 as pb
from servicekit import logs
from servicekit.clock import SystemClock
from servicekit.settings import Settings

ORG = "breakdown"


class _Context:
    """Stands in for grpc's ServicerContext: the handlers only touch it on errors."""

    async def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"handler failed: {status}")

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"handler failed: {code} {details}")


class RawRedis:
    """The least a client can do: one connection, pre-encoded commands, hiredis parsing."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: list[asyncio.Future[Any]] = []
        self.transport: asyncio.Transport | None = None

    async def connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        raw = self

        class Proto(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                raw.reader.feed(data)
                while (reply := raw.reader.gets()) is not False:
                    raw.waiters.pop(0).set_result(reply)

        self.transport, _ = await loop.create_connection(Proto, host, port)

    def call(self, *args: bytes | str | int) -> asyncio.Future[Any]:
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        assert self.transport is not None
        self.transport.write(b"".join(parts))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        return future


ROUNDS = 3  # each step is run this many times; the least disturbed (lowest CPU) round counts


async def measure(
    name: str, op: Callable[[int], Awaitable[Any]], n: int, concurrency: int = 1
) -> dict[str, Any]:
    """CPU and wall µs per call of `op(i)`, n calls with `concurrency` in flight, best round."""
    for i in range(min(200, n)):  # warm caches, pools, connections
        await op(-1 - i)
    per_round = max(1, n // ROUNDS)
    best: tuple[int, int] | None = None
    for _ in range(ROUNDS):
        counter = iter(range(per_round))

        async def worker(calls: Any = counter) -> None:
            for i in calls:
                await op(i)

        cpu0, wall0 = time.thread_time_ns(), time.perf_counter_ns()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = (time.thread_time_ns() - cpu0, time.perf_counter_ns() - wall0)
        best = took if best is None or took[0] < best[0] else best
    assert best is not None
    cpu, wall = best
    row = {
        "step": name,
        "concurrency": concurrency,
        "cpu_us": round(cpu / per_round / 1000, 1),
        "wall_us": round(wall / per_round / 1000, 1),
    }
    print(f"  {name:<52}{concurrency:>4}{row['cpu_us']:>10.1f}{row['wall_us']:>10.1f}", flush=True)
    return row


async def run(n: int) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="budget-breakdown-"))
    redis_proc = RedisProcess(root / "redis", free_port())
    try:
        redis_proc.start()
        return await _run(redis_proc, n)
    finally:
        redis_proc.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _run(redis_proc: RedisProcess, n: int) -> list[dict[str, Any]]:
    settings = Settings.from_env({})
    redis = store.connect(
        redis_proc.url,
        timeout_seconds=settings.redis_timeout_seconds,
        pool_size=settings.redis_pool_size,
    )
    scripts = store.Scripts(redis)
    await scripts.load()
    config = BudgetConfig(
        uid=1,
        id="org-cap",
        org=ORG,
        selector={},
        limit_nanos=10**15,
        period=pb.PERIOD_MONTH,
        timezone="UTC",
        mode=pb.MODE_HARD,
        alert_thresholds_percent=(50, 75, 90, 100),
        overdraft_nanos=0,
        version=1,
    )
    epoch = "breakdown"  # no PostgreSQL here: any epoch, the same for config and cache
    await ConfigSync(scripts, epoch).push(config, first_of_org=True)
    engine = Engine(
        scripts,
        ConfigCache(scripts, epoch=epoch),
        SystemClock(),
        retention_ms=int(settings.retention_seconds * 1000),
    )
    handler = BudgetService(engine, settings)
    ctx: Any = _Context()
    subject = pb.Subject(org=ORG, **client.SUBJECT)  # type: ignore[arg-type]
    tag = iter(range(10**9))

    def reserve_request(i: int) -> pb.ReserveRequest:
        return pb.ReserveRequest(
            reservation_id=f"bd-{next(tag)}", subject=subject, amount_nanos=client.RESERVE_NANOS
        )

    async def reserve_commit(i: int) -> None:
        request = reserve_request(i)
        await handler.Reserve(request, ctx)
        await handler.Commit(
            pb.CommitRequest(
                org=ORG, reservation_id=request.reservation_id, actual_nanos=client.ACTUAL_NANOS
            ),
            ctx,
        )

    async def reserve_only(i: int) -> None:
        await handler.Reserve(reserve_request(i), ctx)

    to_commit: list[str] = []

    async def commit_only(i: int) -> None:
        await handler.Commit(
            pb.CommitRequest(
                org=ORG, reservation_id=to_commit.pop(), actual_nanos=client.ACTUAL_NANOS
            ),
            ctx,
        )

    async def make_holds(count: int) -> None:
        """Reserve `count` holds (not measured) for the Commit step to settle."""
        for _ in range(count):
            request = reserve_request(0)
            await handler.Reserve(request, ctx)
            to_commit.append(request.reservation_id)

    # One real reply, replayed by a fake Scripts.run for the "Redis faked" step.
    sample = reserve_request(0)
    real_run = scripts.run
    captured: list[Any] = []

    async def capture(name: str, k: list[str], a: list[str | int]) -> Any:
        reply = await real_run(name, k, a)
        captured.append((name, k, a, reply))
        return reply

    scripts.run = capture  # type: ignore[method-assign,assignment]
    await handler.Reserve(sample, ctx)
    scripts.run = real_run  # type: ignore[method-assign]
    _, res_keys, res_args, reserve_reply = captured[0]

    async def fake_run(name: str, k: list[str], a: list[str | int]) -> Any:
        return reserve_reply

    async def reserve_faked(i: int) -> None:
        scripts.run = fake_run  # type: ignore[method-assign,assignment]
        try:
            await handler.Reserve(reserve_request(i), ctx)
        finally:
            scripts.run = real_run  # type: ignore[method-assign]

    async def script_reserve(i: int) -> None:
        rid = f"bd-{next(tag)}"
        k = [res_keys[0], keys.reservation(ORG, rid), *res_keys[2:]]
        a = [res_args[0], rid, *res_args[2:]]
        await scripts.run("reserve", k, a)

    trivial = await redis.script_load("return 1")

    async def redispy_trivial(i: int) -> None:
        await redis.evalsha(trivial, 0)

    async def redispy_ping(i: int) -> None:
        await redis.ping()

    raw = RawRedis()
    await raw.connect(redis_proc.host, redis_proc.port)

    async def raw_trivial(i: int) -> None:
        await raw.call(b"EVALSHA", trivial, 0)

    async def raw_reserve(i: int) -> None:
        rid = f"bd-{next(tag)}"
        k = [res_keys[0], keys.reservation(ORG, rid), *res_keys[2:]]
        a = [res_args[0], rid, *res_args[2:]]
        json.loads(await raw.call(b"EVALSHA", scripts.shas["reserve"], len(k), *k, *a))

    conn = redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    reply_text = json.dumps(reserve_reply)
    held = await engine.reserve(
        ORG,
        "bd-pieces",
        "f" * 32,
        subject_pairs(subject),
        client.RESERVE_NANOS,
        critical=False,
        ttl_ms=300_000,
    )

    async def piece_fingerprint(i: int) -> None:
        _fingerprint(sample)

    async def piece_subject_pairs(i: int) -> None:
        subject_pairs(sample.subject)

    async def piece_pack(i: int) -> None:
        conn.pack_command("EVALSHA", scripts.shas["reserve"], len(res_keys), *res_keys, *res_args)

    async def piece_json(i: int) -> None:
        json.loads(reply_text)

    async def piece_response(i: int) -> None:
        response = pb.ReserveResponse(
            reservation_id="x",
            reserved_nanos=held.amount_nanos,
            budgets=balances_to_proto(held.budgets),
        )
        response.expires_at.FromMilliseconds(held.expires_at_ms)
        response.SerializeToString()

    async def piece_request_parse(i: int) -> None:
        pb.ReserveRequest.FromString(sample.SerializeToString())

    print(f"  {'step':<52}{'in flight':>4}{'cpu µs':>10}{'wall µs':>10}")
    rows: list[dict[str, Any]] = [
        await measure("handler Reserve+Commit (2 calls), real Redis", reserve_commit, n),
        await measure("handler Reserve+Commit (2 calls), real Redis", reserve_commit, n, 64),
        await measure("handler Reserve, real Redis", reserve_only, n),
        await measure("handler Reserve, real Redis", reserve_only, n, 64),
    ]
    await make_holds(n + 200)
    rows += [
        await measure("handler Commit, real Redis", commit_only, n),
        await measure("handler Reserve, Redis faked (canned reply)", reserve_faked, n),
        await measure("scripts.run('reserve'): redis-py EVALSHA + json", script_reserve, n),
        await measure("scripts.run('reserve'): redis-py EVALSHA + json", script_reserve, n, 64),
        await measure("redis-py EVALSHA 'return 1'", redispy_trivial, n),
        await measure("redis-py EVALSHA 'return 1'", redispy_trivial, n, 64),
        await measure("redis-py PING", redispy_ping, n, 64),
        await measure("raw asyncio+hiredis EVALSHA 'return 1'", raw_trivial, n),
        await measure("raw asyncio+hiredis EVALSHA 'return 1'", raw_trivial, n, 64),
        await measure("raw asyncio+hiredis EVALSHA reserve + json", raw_reserve, n, 64),
        await measure("piece: _fingerprint (serialize + blake2b)", piece_fingerprint, n),
        await measure("piece: subject_pairs (6 fields)", piece_subject_pairs, n),
        await measure("piece: redis-py pack_command(reserve args)", piece_pack, n),
        await measure("piece: json.loads(reserve reply)", piece_json, n),
        await measure("piece: ReserveRequest parse", piece_request_parse, n),
        await measure("piece: ReserveResponse build + serialize", piece_response, n),
    ]
    assert raw.transport is not None
    raw.transport.close()
    await redis.aclose()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.breakdown",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", type=int, default=5000, help="calls per step")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    p.add_argument("--log-level", default="warning", help="as the service's LOG_LEVEL")
    args = p.parse_args(argv)
    logs.configure(args.log_level, "json")
    rows = uvloop.run(run(args.n))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
