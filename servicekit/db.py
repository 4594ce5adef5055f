"""PostgreSQL: the connection pool and the numbered SQL migrations applied at start."""

from __future__ import annotations

from importlib import resources

import asyncpg
import structlog

from servicekit.errors import Unavailable

log = structlog.get_logger(__name__)

# Serialises migrations when several replicas start at once.
MIGRATION_LOCK = 7_260_001


async def connect(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool to `url`; Unavailable when PostgreSQL cannot be reached."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise Unavailable(f"PostgreSQL is unreachable at {_redact(url)}: {exc}") from exc
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool, package: str, *, record_prefix: str) -> list[str]:
    """Apply `package`'s migrations/NNN_*.sql not applied yet, in order; returns those applied.

    Each service keeps its own numbered files; they share one schema_migrations table, where a
    file is recorded as `<record_prefix><file>` (the budget service's as the bare file name,
    the pricing service's as `pricing_service/<file>`).
    """
    folder = resources.files(package) / "migrations"
    prefix = record_prefix
    files = sorted(
        (prefix + f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql")
    )
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in files:
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
            log.info("db.migrated", migration=name)
    return applied


class guard:
    """Turns a lost PostgreSQL connection into Unavailable."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(
            exc,
            (
                OSError,
                asyncpg.exceptions.ConnectionDoesNotExistError,
                asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.InterfaceError,
            ),
        ):
            raise Unavailable(f"PostgreSQL is unreachable: {exc}") from exc


def _redact(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"
