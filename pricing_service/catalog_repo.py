"""The price catalog in PostgreSQL: models, aliases, and price versions never rewritten."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from pricing_service.names import candidates, provider_hint
from pricing_service.prices import PER_MILLION_FIELDS, ModelPrice

PRICE_COLUMNS = (*PER_MILLION_FIELDS, "request_fee")


class UnknownModel(LookupError):
    """No catalog entry answers to the name: never priced as $0."""

    def __init__(self, name: str, provider: str, tried: list[str]) -> None:
        where = f" of provider {provider!r}" if provider else ""
        super().__init__(
            f"model {name!r}{where} has no price (tried {', '.join(tried)}); add one with"
            " PricingService/UpsertPrice, or a source in PRICING_SOURCE_URLS"
        )
        self.name = name


class AmbiguousModel(LookupError):
    """A name several providers sell at different prices: the caller must say which."""

    def __init__(self, name: str, providers: list[str]) -> None:
        super().__init__(
            f"model {name!r} is sold by {', '.join(providers)}; pass provider to choose"
        )


@dataclass(frozen=True)
class PriceVersion:
    """A price as of one catalog version."""

    price: ModelPrice
    version: int
    effective_from: datetime
    source: str


def _version(model: asyncpg.Record, row: asyncpg.Record, aliases: list[str]) -> PriceVersion:
    data: dict[str, Any] = {
        "provider": model["provider"],
        "model": model["model"],
        "aliases": aliases,
        "mode": model["mode"],
        "max_input_tokens": model["max_input_tokens"],
        "max_output_tokens": model["max_output_tokens"],
        "tiers": json.loads(row["tiers"]),
    }
    for name in PRICE_COLUMNS:
        value: Decimal | None = row[name]
        data[name] = None if value is None else str(value)
    return PriceVersion(ModelPrice.from_dict(data), row["version"], row["effective_from"],
                        row["source"])  # fmt: skip


@dataclass(frozen=True)
class SourceState:
    """What a price source last delivered that was accepted (table price_sources)."""

    source: str
    etag: str | None
    content_sha256: str | None
    models: int
    fetched_at: datetime


class CatalogRepository:
    """Reads and writes the catalog; every change is a new version row."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, price: ModelPrice, *, source: str,
                     effective_from: datetime | None = None) -> PriceVersion | None:  # fmt: skip
        """Store `price` as a new version unless it equals the latest; the new version, or None."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                               f"price/{price.provider}/{price.model}")  # fmt: skip
            model = await conn.fetchrow(
                "INSERT INTO price_models (provider, model, mode, max_input_tokens,"
                " max_output_tokens) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (provider, model) DO UPDATE SET mode = EXCLUDED.mode,"
                " max_input_tokens = EXCLUDED.max_input_tokens,"
                " max_output_tokens = EXCLUDED.max_output_tokens RETURNING *",
                price.provider, price.model, price.mode, price.max_input_tokens,
                price.max_output_tokens,
            )  # fmt: skip
            await conn.execute("DELETE FROM price_aliases WHERE model_id = $1", model["id"])
            await conn.executemany(
                "INSERT INTO price_aliases (alias, model_id) VALUES ($1, $2)",
                [(alias, model["id"]) for alias in price.aliases],
            )
            latest = await conn.fetchval(
                "SELECT fingerprint FROM price_versions WHERE model_id = $1"
                " ORDER BY effective_from DESC, version DESC LIMIT 1",
                model["id"],
            )
            fingerprint = price.fingerprint()
            if latest == fingerprint:
                return None
            columns = ", ".join(PRICE_COLUMNS)
            params = ", ".join(f"${i}" for i in range(6, 6 + len(PRICE_COLUMNS)))
            row = await conn.fetchrow(
                "INSERT INTO price_versions (model_id, effective_from, tiers, fingerprint,"
                f" source, {columns}) VALUES ($1, coalesce($2, now()), $3, $4, $5, {params})"
                " RETURNING *",
                model["id"], effective_from, json.dumps(price.to_dict()["tiers"]), fingerprint,
                source, *(getattr(price, name) for name in PRICE_COLUMNS),
            )  # fmt: skip
            await conn.execute("SELECT pg_notify('price_versions', $1)", str(row["version"]))
            return _version(model, row, list(price.aliases))

    async def latest_fingerprints(self, source: str) -> dict[tuple[str, str], str]:
        """(provider, model) -> fingerprint of the latest version `source` delivered."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (v.model_id) m.provider, m.model, v.fingerprint"
            " FROM price_versions v JOIN price_models m ON m.id = v.model_id"
            " WHERE v.source = $1 ORDER BY v.model_id, v.effective_from DESC, v.version DESC",
            source,
        )
        return {(r["provider"], r["model"]): r["fingerprint"] for r in rows}

    async def record_changed(self, prices: Iterable[ModelPrice], *, source: str) -> int:
        """Record what `source` delivers; the number of new versions.

        A price equal to the one `source` delivered last time is not recorded again, even when
        an admin or another source has changed that model since: only a change at the source
        creates a version, so one source cannot undo another's (or an admin's) price merely by
        being read again (at every start, every refresh).
        """
        delivered = await self.latest_fingerprints(source)
        changed = 0
        for price in prices:
            if delivered.get((price.provider, price.model)) == price.fingerprint():
                continue
            if await self.record(price, source=source) is not None:
                changed += 1
        return changed

    async def source_state(self, source: str) -> SourceState | None:
        """What `source` last delivered that was accepted, if anything."""
        row = await self.pool.fetchrow("SELECT * FROM price_sources WHERE source = $1", source)
        if row is None:
            return None
        return SourceState(row["source"], row["etag"], row["content_sha256"], row["models"],
                           row["fetched_at"])  # fmt: skip

    async def save_source(
        self, source: str, *, etag: str | None, content_sha256: str | None, models: int
    ) -> None:
        """Remember an accepted (or unchanged) fetch of `source`."""
        await self.pool.execute(
            "INSERT INTO price_sources (source, etag, content_sha256, models, fetched_at)"
            " VALUES ($1, $2, $3, $4, now()) ON CONFLICT (source) DO UPDATE SET"
            " etag = EXCLUDED.etag, content_sha256 = EXCLUDED.content_sha256,"
            " models = EXCLUDED.models, fetched_at = EXCLUDED.fetched_at",
            source, etag, content_sha256, models,
        )  # fmt: skip

    async def has_provider(self, provider: str) -> bool:
        """Whether the catalog has any model of `provider`."""
        found = await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM price_models WHERE provider = $1)", provider
        )
        return bool(found)

    async def resolve(self, name: str, provider: str = "") -> tuple[int, str, str]:
        """(model id, provider, model) of the entry `name` means; UnknownModel / AmbiguousModel."""
        provider = provider or provider_hint(name) or ""
        tried = candidates(name)
        for candidate in tried:
            rows = await self.pool.fetch(
                "SELECT DISTINCT m.id, m.provider, m.model, m.model = $1 AS exact"
                " FROM price_models m LEFT JOIN price_aliases a ON a.model_id = m.id"
                " WHERE (m.model = $1 OR a.alias = $1) AND ($2 = '' OR m.provider = $2)"
                " ORDER BY exact DESC, m.provider",
                candidate, provider,
            )  # fmt: skip
            if not rows:
                continue
            exact = [r for r in rows if r["exact"]] or rows
            if len({r["id"] for r in exact}) > 1:
                raise AmbiguousModel(name, sorted({r["provider"] for r in exact}))
            return exact[0]["id"], exact[0]["provider"], exact[0]["model"]
        raise UnknownModel(name, provider, tried)

    async def price_at(self, model_id: int, at: datetime | None = None) -> PriceVersion:
        """The version in effect at `at` (default now)."""
        model = await self.pool.fetchrow("SELECT * FROM price_models WHERE id = $1", model_id)
        row = await self.pool.fetchrow(
            "SELECT * FROM price_versions WHERE model_id = $1"
            " AND effective_from <= coalesce($2, now())"
            " ORDER BY effective_from DESC, version DESC LIMIT 1",
            model_id, at,
        )  # fmt: skip
        if model is None or row is None:
            raise UnknownModel(str(model_id), "", [f"no price in effect at {at or 'now'}"])
        return _version(model, row, await self._aliases(model_id))

    async def by_version(self, version: int) -> PriceVersion:
        """One version row, whatever came after it (a reservation prices its commit with it)."""
        row = await self.pool.fetchrow("SELECT * FROM price_versions WHERE version = $1", version)
        if row is None:
            raise UnknownModel(f"version {version}", "", [])
        model = await self.pool.fetchrow(
            "SELECT * FROM price_models WHERE id = $1", row["model_id"]
        )
        return _version(model, row, await self._aliases(row["model_id"]))

    async def changes_since(self, version: int, limit: int = 1000) -> list[PriceVersion]:
        """Versions above `version`, oldest first (WatchPrices' backlog), in one query.

        Aliases come with each row: a query per row made loading the whole catalog cost one
        round trip per model.
        """
        rows = await self.pool.fetch(
            "SELECT v.*, m.provider, m.model, m.mode, m.max_input_tokens, m.max_output_tokens,"
            " array(SELECT a.alias FROM price_aliases a WHERE a.model_id = v.model_id"
            " ORDER BY a.alias) AS aliases"
            " FROM price_versions v JOIN price_models m ON m.id = v.model_id"
            " WHERE v.version > $1 ORDER BY v.version LIMIT $2",
            version, limit,
        )  # fmt: skip
        return [_version(r, r, r["aliases"]) for r in rows]

    async def latest_version(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(version), 0) FROM price_versions"))

    async def current_models(self, *, provider: str = "", mode: str = "", after: str = "",
                             limit: int = 100) -> list[PriceVersion]:  # fmt: skip
        """Current prices of models ordered by provider/model, after the key `after`."""
        rows = await self.pool.fetch(
            "SELECT m.id FROM price_models m WHERE ($1 = '' OR m.provider = $1)"
            " AND ($2 = '' OR m.mode = $2) AND (m.provider || '/' || m.model) > $3"
            " ORDER BY m.provider || '/' || m.model LIMIT $4",
            provider, mode, after, limit,
        )  # fmt: skip
        return [await self.price_at(r["id"]) for r in rows]

    async def _aliases(self, model_id: int) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT alias FROM price_aliases WHERE model_id = $1 ORDER BY alias", model_id
        )
        return [r["alias"] for r in rows]
