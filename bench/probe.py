"""Redis time per reserve and commit script with one call in flight and nothing else running.

The reserve-only phase measures the reserve script under full load, where Redis shares the
CPUs with the service and the clients and a script's wall time includes the moments Redis was
descheduled. This probe runs the same scripts through the service's own Engine (same keys, same
arguments), one call at a time, each with its own CONFIG RESETSTAT, so the figure is the
script's cost in Redis and not the machine's load.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from bench import client
from budget_service.hotpath import store
from budget_service.hotpath.budgets import subject_pairs
from budget_service.hotpath.config_cache import ConfigCache
from budget_service.hotpath.engine import Engine
from genproto.budget.v1 import budget_pb2 as pb
from servicekit.clock import SystemClock
from servicekit.settings import Settings

HOLD_TTL_MS = client.HOLD_TTL_SECONDS * 1000


async def _evalsha_stats(redis: Any) -> dict[str, float]:
    stats = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
    return {
        "calls": int(stats.get("calls", 0)),
        "usec_per_call": float(stats.get("usec_per_call", 0)),
    }


async def _probe(url: str, org: str, calls: int) -> dict[str, Any]:
    settings = Settings.from_env({})
    redis = store.connect(url, timeout_seconds=5.0, pool_size=4)
    try:
        scripts = store.Scripts(redis)
        await scripts.load()
        engine = Engine(
            scripts,
            ConfigCache(scripts),
            SystemClock(),
            retention_ms=int(settings.retention_seconds * 1000),
        )
        pairs = subject_pairs(pb.Subject(org=org, **client.SUBJECT))  # type: ignore[arg-type]
        tag = uuid.uuid4().hex[:8]
        ids = [f"probe-{tag}-{i}" for i in range(calls)]
        await engine.cache.get(org)  # config load (HGETALL) before the stats are reset
        await redis.config_resetstat()
        for rid in ids:
            await engine.reserve(
                org, rid, "f" * 32, pairs, client.RESERVE_NANOS, critical=False, ttl_ms=HOLD_TTL_MS
            )
        reserve = await _evalsha_stats(redis)
        await redis.config_resetstat()
        actual = client.ACTUAL_NANOS
        for rid in ids:
            await engine.commit(org, rid, str(actual), actual)
        commit = await _evalsha_stats(redis)
        # Baseline on the same server in the same run: what EVALSHA of `return 1` costs here,
        # so the scripts' cost can be read as a ratio on any machine.
        empty_sha = await redis.script_load("return 1")
        await redis.config_resetstat()
        for _ in ids:
            await redis.evalsha(empty_sha, 0)
        empty = await _evalsha_stats(redis)
        return {"reserve": reserve, "commit": commit, "empty": empty}
    finally:
        await redis.aclose()


def probe_scripts(url: str, org: str, calls: int = 500) -> dict[str, Any]:
    """{"reserve"|"commit"|"empty": {calls, usec_per_call}}, measured one call at a time."""
    return asyncio.run(_probe(url, org, calls))
