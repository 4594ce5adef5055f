"""Per-org price overrides in PostgreSQL (table price_overrides), one per org/provider/model.

Every change sends NOTIFY price_overrides with the org as payload, so an in-process copy (the
budget service's) can reload that org's overrides at once.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from pricing_service.overrides import PRICE_FIELDS, PriceOverride
from pricing_service.prices import ModelPrice

CHANNEL = "price_overrides"


def _prices_json(price: ModelPrice) -> str:
    data = price.to_dict()
    return json.dumps({name: data[name] for name in (*PRICE_FIELDS, "tiers")}, sort_keys=True)


def _override(row: asyncpg.Record) -> PriceOverride:
    prices = None
    if row["prices"] is not None:
        stored: dict[str, Any] = json.loads(row["prices"])
        prices = ModelPrice.from_dict(
            {"provider": row["provider"], "model": row["model"], **stored}
        )
    return PriceOverride(
        org=row["org"],
        provider=row["provider"],
        model=row["model"],
        discount_percent=row["discount_percent"],
        prices=prices,
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


class OverrideRepository:
    """Reads and writes price_overrides."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def for_org(
        self, org: str, *, provider: str = "", model: str = ""
    ) -> list[PriceOverride]:
        """The org's overrides (optionally of one provider / model), org-wide ones first."""
        rows = await self.pool.fetch(
            "SELECT * FROM price_overrides WHERE org = $1 AND ($2 = '' OR provider = $2)"
            " AND ($3 = '' OR model = $3) ORDER BY provider, model",
            org, provider, model,
        )  # fmt: skip
        return [_override(row) for row in rows]

    async def set(self, override: PriceOverride, *, actor: str) -> PriceOverride:
        """Create or replace the override of (org, provider, model); the stored override."""
        prices = None if override.prices is None else _prices_json(override.prices)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO price_overrides (org, provider, model, discount_percent, prices,"
                " updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, now(), $6)"
                " ON CONFLICT (org, provider, model) DO UPDATE SET"
                " discount_percent = EXCLUDED.discount_percent, prices = EXCLUDED.prices,"
                " updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by"
                " RETURNING *",
                override.org, override.provider, override.model, override.discount_percent,
                prices, actor,
            )  # fmt: skip
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, override.org)
        return _override(row)

    async def delete(self, org: str, provider: str, model: str) -> bool:
        """Remove one override; False when there was none."""
        async with self.pool.acquire() as conn, conn.transaction():
            deleted = await conn.fetchval(
                "DELETE FROM price_overrides WHERE org = $1 AND provider = $2 AND model = $3"
                " RETURNING id",
                org, provider, model,
            )  # fmt: skip
            if deleted is not None:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, org)
        return deleted is not None
