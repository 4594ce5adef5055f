"""The data-set epoch: how a service tells that Redis lost its data, and fails closed.

PostgreSQL keeps one random epoch (table `redis_epoch`). Redis carries it twice: the sentinel
key `ba:epoch`, and `_e` in the config hash of every org that has budgets (written with the
org's first budget and by every rebuild). Every script that moves money compares the org's `_e`
with the epoch the service expects and answers LOST on a mismatch; loading an org's config that
should have budgets but has no epoch raises DataLost; and every process checks the sentinel each
second, so a Redis that came back empty (no persistence, a flush, a new server) is noticed even
for orgs without budgets. Until the org (or the whole data set) is rebuilt from the PostgreSQL
ledger, calls answer UNAVAILABLE instead of admitting against counters that start from zero.

The first start on a Redis that predates the epoch adopts its data (writes the epoch into it)
instead of rebuilding; `redis_epoch.adopted` records that this happened once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from servicekit.db import guard


@dataclass(frozen=True)
class Epoch:
    """This database's epoch, and whether a service has put it into Redis yet."""

    value: str
    adopted: bool


async def load(pool: asyncpg.Pool) -> Epoch:
    """The database's epoch, created on first use."""
    async with guard():
        await pool.execute(
            "INSERT INTO redis_epoch (epoch) VALUES ($1) ON CONFLICT (singleton) DO NOTHING",
            secrets.token_hex(8),
        )
        row = await pool.fetchrow("SELECT epoch, adopted FROM redis_epoch")
    return Epoch(row["epoch"], row["adopted"])


async def mark_adopted(pool: asyncpg.Pool) -> None:
    """Record that Redis now carries the epoch: from now on a Redis without it lost its data."""
    async with guard():
        await pool.execute(
            "UPDATE redis_epoch SET adopted = true, adopted_at = now() WHERE NOT adopted"
        )
