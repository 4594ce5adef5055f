"""Redis access: the Lua scripts, loaded once and called by SHA, and the errors of the wire.

Every state change of a budget is one call to one of these scripts, sent over a lean pipelined
connection (redis_wire.py); reads off the hot path (status, sweeper, config) use redis-py. A
script missing from the server's cache (NOSCRIPT, after a Redis restart or failover) is loaded
again and the call retried, transparently; so is a call whose connection was lost, on a new
connection: every script is idempotent by its ids, so running it twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from budget_service.hotpath.redis_wire import Address, RedisWire, ReplyError, WireError
from servicekit.errors import ScriptError, Unavailable

log = structlog.get_logger(__name__)

SCRIPT_NAMES = (
    "reserve",
    "commit",
    "release",
    "refund",
    "extend",
    "expire",
    "upsert_budget",
    "delete_budget",
    "sync_org",
    "config_changes",
    "config_check",
    "snapshot",
    "restore",
    "prune_org",
    "ledger_trim",
)


def script_source(name: str) -> str:
    """A script's full source: the shared prelude (lib.lua) followed by the script."""
    folder = resources.files("budget_service.hotpath") / "scripts"
    return (folder / "lib.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


class Scripts:
    """The service's Lua scripts; `client` stays available for plain reads."""

    def __init__(self, client: aioredis.Redis, wire: RedisWire | None = None) -> None:
        self.client = client
        self.wire = wire or _wire_like(client)
        self.sources = {name: script_source(name) for name in SCRIPT_NAMES}
        self.shas = {
            name: hashlib.sha1(src.encode()).hexdigest() for name, src in self.sources.items()
        }

    async def load(self) -> None:
        """Load every script into Redis (also checks that each one compiles)."""
        for name in self.sources:
            await self._load(name)

    async def _load(self, name: str) -> None:
        try:
            sha = await self.wire.call("SCRIPT", "LOAD", self.sources[name])
        except WireError as exc:
            raise Unavailable(f"Redis is unreachable ({exc}); retry later") from exc
        if sha != self.shas[name]:
            raise ScriptError(f"Redis returned sha {sha} for script {name}")

    async def run(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        """Run a script by SHA and decode its JSON reply."""
        for attempt in range(3):
            try:
                raw = await self.wire.call("EVALSHA", self.shas[name], len(keys), *keys, *args)
                return json.loads(raw)
            except ReplyError as exc:
                if str(exc).startswith("NOSCRIPT") and attempt < 2:
                    await self._load(name)
                    continue
                log.error("script.failed", script=name, error=str(exc))
                raise ScriptError(
                    f"internal error in the {name} script; see the service log"
                ) from exc
            except WireError as exc:
                if attempt == 0:  # one retry on a fresh connection: Redis may have restarted
                    continue
                raise Unavailable(f"Redis is unreachable ({exc}); retry later") from exc
        raise Unavailable(f"script {name} could not be run; retry later")

    def close(self) -> None:
        self.wire.close()


async def redis_call(awaitable: Any) -> Any:
    """Await a Redis command, turning connection failures into Unavailable."""
    try:
        return await awaitable
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise Unavailable(f"Redis is unreachable ({type(exc).__name__}); retry later") from exc


def connect(url: str, *, timeout_seconds: float, pool_size: int) -> aioredis.Redis:
    """A Redis client whose every command gives up after `timeout_seconds` (fail closed)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        max_connections=pool_size,
        timeout=timeout_seconds,
        # One retry covers a pooled connection that died with a restarted Redis; the scripts
        # are idempotent by reservation id, so a retried call never charges twice.
        retry=Retry(NoBackoff(), 1),
    )
    return aioredis.Redis(connection_pool=pool)


def _wire_like(client: aioredis.Redis) -> RedisWire:
    """A wire to the same server, database and credentials as a redis-py client."""
    kw = client.connection_pool.connection_kwargs
    address = Address(
        host=kw.get("host", "127.0.0.1"),
        port=int(kw.get("port", 6379)),
        db=int(kw.get("db", 0)),
        username=kw.get("username"),
        password=kw.get("password"),
        tls=bool(kw.get("ssl", False)) or "SSL" in client.connection_pool.connection_class.__name__,
    )
    timeout = kw.get("socket_timeout") or 1.0
    return RedisWire(address, timeout_seconds=float(timeout))
