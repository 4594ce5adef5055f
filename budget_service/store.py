"""Redis access: the Lua scripts, loaded once and called by SHA, and the errors of the wire.

Every state change of a budget is one call to one of these scripts. A script missing from the
server's cache (NOSCRIPT, after a Redis restart or failover) is loaded again and the call
retried once, transparently.
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

from budget_service.errors import ScriptError, Unavailable

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
)


def script_source(name: str) -> str:
    """A script's full source: the shared prelude (lib.lua) followed by the script."""
    folder = resources.files("budget_service") / "scripts"
    return (folder / "lib.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


class Scripts:
    """The service's Lua scripts on one Redis client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.sources = {name: script_source(name) for name in SCRIPT_NAMES}
        self.shas = {
            name: hashlib.sha1(src.encode()).hexdigest() for name, src in self.sources.items()
        }

    async def load(self) -> None:
        """Load every script into Redis (also checks that each one compiles)."""
        for name, source in self.sources.items():
            sha = await redis_call(self.client.script_load(source))
            if sha != self.shas[name]:
                raise RuntimeError(f"Redis returned sha {sha} for script {name}")

    async def run(self, name: str, keys: list[str], args: list[str | int]) -> Any:
        """Run a script by SHA and decode its JSON reply; reload it once on NOSCRIPT."""
        try:
            raw = await self.client.evalsha(self.shas[name], len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await redis_call(self.client.script_load(self.sources[name]))
            raw = await redis_call(self.client.evalsha(self.shas[name], len(keys), *keys, *args))
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise Unavailable(f"Redis is unreachable ({type(exc).__name__}); retry later") from exc
        except redis_errors.ResponseError as exc:
            log.error("script.failed", script=name, error=str(exc))
            raise ScriptError(f"internal error in the {name} script; see the service log") from exc
        return json.loads(raw)


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
