"""Budget configuration in PostgreSQL: every change writes its audit row in the same transaction."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from budget_service.hotpath.budgets import BudgetConfig
from genproto.budget.v1 import budget_pb2 as pb
from servicekit.db import guard
from servicekit.errors import FailedPrecondition, NotFound

COLUMNS = (
    "uid, org, id, selector, limit_nanos, period, timezone, mode, alert_thresholds_percent,"
    " overdraft_nanos, version, created_at, updated_at, unknown_input_nanos_per_million,"
    " unknown_output_nanos_per_million"
)


def _row_to_config(row: asyncpg.Record) -> BudgetConfig:
    return BudgetConfig(
        uid=row["uid"],
        id=row["id"],
        org=row["org"],
        selector=json.loads(row["selector"]),
        limit_nanos=row["limit_nanos"],
        period=row["period"],
        timezone=row["timezone"],
        mode=row["mode"],
        alert_thresholds_percent=tuple(row["alert_thresholds_percent"]),
        overdraft_nanos=row["overdraft_nanos"],
        version=row["version"],
        created_at_ms=int(row["created_at"].timestamp() * 1000),
        updated_at_ms=int(row["updated_at"].timestamp() * 1000),
        unknown_model_price=(
            None
            if row["unknown_input_nanos_per_million"] is None
            else (row["unknown_input_nanos_per_million"], row["unknown_output_nanos_per_million"])
        ),
    )


def _unknown_model_price(budget: pb.Budget) -> tuple[int | None, int | None]:
    if not budget.HasField("unknown_model_price"):
        return None, None
    price = budget.unknown_model_price
    return price.input_nanos_per_million, price.output_nanos_per_million


def _audit_json(config: BudgetConfig | None) -> str | None:
    return None if config is None else config.to_json()


class BudgetRepository:
    """CRUD of budgets; callers push the result to Redis after the transaction commits."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def upsert(self, budget: pb.Budget, actor: str) -> BudgetConfig:
        """Create or replace a (validated) budget; the version goes up by one."""
        async with guard(), self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"{budget.org}/{budget.id}"
            )
            before_row = await conn.fetchrow(
                f"SELECT {COLUMNS} FROM budgets WHERE org = $1 AND id = $2",
                budget.org,
                budget.id,
            )
            values: list[Any] = [
                budget.org,
                budget.id,
                json.dumps(dict(budget.selector), sort_keys=True),
                budget.limit_nanos,
                budget.period,
                budget.timezone,
                budget.mode,
                list(budget.alert_thresholds_percent),
                budget.overdraft_nanos,
                *_unknown_model_price(budget),
            ]
            if before_row is None:
                row = await conn.fetchrow(
                    "INSERT INTO budgets (org, id, selector, limit_nanos, period, timezone, mode,"
                    " alert_thresholds_percent, overdraft_nanos, unknown_input_nanos_per_million,"
                    " unknown_output_nanos_per_million, version)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1)"
                    f" RETURNING {COLUMNS}",
                    *values,
                )
            else:
                row = await conn.fetchrow(
                    "UPDATE budgets SET selector = $3, limit_nanos = $4, period = $5,"
                    " timezone = $6, mode = $7, alert_thresholds_percent = $8,"
                    " overdraft_nanos = $9, unknown_input_nanos_per_million = $10,"
                    " unknown_output_nanos_per_million = $11, version = version + 1,"
                    " updated_at = now()"
                    f" WHERE org = $1 AND id = $2 RETURNING {COLUMNS}",
                    *values,
                )
            before = None if before_row is None else _row_to_config(before_row)
            after = _row_to_config(row)
            await self._audit(
                conn, after, "create" if before is None else "update", actor, before, after
            )
            return after

    async def create_many(self, budgets: list[pb.Budget], actor: str) -> list[BudgetConfig]:
        """Create many new (validated) budgets in one transaction, each with its audit row.

        The bulk path (e.g. 100,000 per-user budgets): rows and audit rows go in by COPY, so
        it takes seconds where one UpsertBudget per budget takes minutes. Any id that already
        exists fails the whole batch (FailedPrecondition); nothing is created then.
        """
        columns = (
            "org", "id", "selector", "limit_nanos", "period", "timezone", "mode",
            "alert_thresholds_percent", "overdraft_nanos", "unknown_input_nanos_per_million",
            "unknown_output_nanos_per_million", "version",
        )  # fmt: skip
        records = [
            (
                b.org,
                b.id,
                json.dumps(dict(b.selector), sort_keys=True),
                b.limit_nanos,
                b.period,
                b.timezone,
                b.mode,
                list(b.alert_thresholds_percent),
                b.overdraft_nanos,
                *_unknown_model_price(b),
                1,
            )
            for b in budgets
        ]
        async with guard(), self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.copy_records_to_table("budgets", records=records, columns=columns)
            except asyncpg.UniqueViolationError as exc:
                raise FailedPrecondition(
                    "some of these budget ids already exist; create only new ids (UpsertBudget"
                    " replaces an existing budget)"
                ) from exc
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM budgets b"
                " JOIN unnest($1::text[], $2::text[]) AS n(org, id) USING (org, id)"
                " ORDER BY b.uid",
                [b.org for b in budgets],
                [b.id for b in budgets],
            )
            created = [_row_to_config(r) for r in rows]
            await conn.copy_records_to_table(
                "budget_audit",
                records=[(c.org, c.id, "create", actor, None, c.to_json()) for c in created],
                columns=("org", "budget_id", "action", "actor", "before", "after"),
            )
        return created

    async def delete(self, org: str, budget_id: str, actor: str) -> BudgetConfig:
        """Remove a budget; NotFound when there is none."""
        async with guard(), self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"DELETE FROM budgets WHERE org = $1 AND id = $2 RETURNING {COLUMNS}",
                org,
                budget_id,
            )
            if row is None:
                raise _not_found(org, budget_id)
            before = _row_to_config(row)
            await self._audit(conn, before, "delete", actor, before, None)
            return before

    async def get(self, org: str, budget_id: str) -> BudgetConfig:
        """One budget; NotFound when there is none."""
        async with guard():
            row = await self.pool.fetchrow(
                f"SELECT {COLUMNS} FROM budgets WHERE org = $1 AND id = $2", org, budget_id
            )
        if row is None:
            raise _not_found(org, budget_id)
        return _row_to_config(row)

    async def page(self, org: str, *, after_id: str, limit: int) -> list[BudgetConfig]:
        """Up to `limit` budgets of an org with ids after `after_id`, ordered by id."""
        async with guard():
            rows = await self.pool.fetch(
                f"SELECT {COLUMNS} FROM budgets WHERE org = $1 AND id > $2 ORDER BY id LIMIT $3",
                org,
                after_id,
                limit,
            )
        return [_row_to_config(r) for r in rows]

    async def in_org(self, org: str) -> list[BudgetConfig]:
        """Every budget of one org, ordered by id."""
        async with guard():
            rows = await self.pool.fetch(
                f"SELECT {COLUMNS} FROM budgets WHERE org = $1 ORDER BY id", org
            )
        return [_row_to_config(r) for r in rows]

    async def count(self, org: str) -> int:
        """How many budgets the org has."""
        async with guard():
            found: int = await self.pool.fetchval(
                "SELECT count(*) FROM budgets WHERE org = $1", org
            )
        return found

    async def all_by_org(self) -> dict[str, list[BudgetConfig]]:
        """Every budget of every org (for reconciling Redis at start)."""
        async with guard():
            rows = await self.pool.fetch(f"SELECT {COLUMNS} FROM budgets ORDER BY org, id")
        out: dict[str, list[BudgetConfig]] = {}
        for r in rows:
            out.setdefault(r["org"], []).append(_row_to_config(r))
        return out

    async def versions_by_org(self) -> dict[str, dict[int, int]]:
        """org -> uid -> version of every budget: what reconciling compares, without the rows."""
        async with guard():
            rows = await self.pool.fetch("SELECT org, uid, version FROM budgets")
        out: dict[str, dict[int, int]] = {}
        for org, uid, version in rows:
            out.setdefault(org, {})[uid] = version
        return out

    async def versions_in_org(self, org: str) -> dict[int, int]:
        """uid -> version of every budget of one org."""
        async with guard():
            rows = await self.pool.fetch("SELECT uid, version FROM budgets WHERE org = $1", org)
        return {uid: version for uid, version in rows}

    async def get_many(self, org: str, uids: list[int]) -> list[BudgetConfig]:
        """The budgets of `org` among `uids` (a uid deleted meanwhile is left out), by uid."""
        async with guard():
            rows = await self.pool.fetch(
                f"SELECT {COLUMNS} FROM budgets WHERE org = $1 AND uid = ANY($2::bigint[])"
                " ORDER BY uid",
                org,
                uids,
            )
        return [_row_to_config(r) for r in rows]

    async def audit_trail(self, org: str, budget_id: str) -> list[dict[str, Any]]:
        """The audit rows of one budget, oldest first."""
        async with guard():
            rows = await self.pool.fetch(
                "SELECT action, actor, at, before, after FROM budget_audit"
                " WHERE org = $1 AND budget_id = $2 ORDER BY id",
                org,
                budget_id,
            )
        return [dict(r) for r in rows]

    @staticmethod
    async def _audit(
        conn: asyncpg.Connection,
        config: BudgetConfig,
        action: str,
        actor: str,
        before: BudgetConfig | None,
        after: BudgetConfig | None,
    ) -> None:
        await conn.execute(
            "INSERT INTO budget_audit (org, budget_id, action, actor, before, after)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            config.org,
            config.id,
            action,
            actor,
            _audit_json(before),
            _audit_json(after),
        )


def _not_found(org: str, budget_id: str) -> NotFound:
    return NotFound(f"budget {budget_id!r} not found in org {org!r} (ListBudgets shows its ids)")
