"""Copies budget configuration from PostgreSQL (the source of truth) into Redis."""

from __future__ import annotations

from typing import Any

import structlog

from budget_service.config.budget_repo import BudgetRepository
from budget_service.hotpath import keys
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.store import Scripts, redis_call

log = structlog.get_logger(__name__)


PUSH_CHUNK = 1000  # budgets per sync_org call when many are pushed at once
CHECK_CHUNK = 2000  # budgets per config_check call


class ConfigSync:
    """Pushes one budget's change, or a whole org's configuration, to Redis."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts
        self.client = scripts.client

    async def push(self, config: BudgetConfig) -> None:
        """Make Redis hold `config` (a newer version than any it holds)."""
        await redis_call(self.client.sadd(keys.ORGS, config.org))
        await self.scripts.run(
            "upsert_budget",
            [
                keys.config(config.org),
                keys.budget(config.org, config.uid),
                keys.config_changes(config.org),
            ],
            [
                config.uid,
                config.to_json(),
                config.id,
                config.limit_nanos,
                config.overdraft_nanos,
                config.mode_name,
                config.version,
            ],
        )

    async def push_many(self, configs: list[BudgetConfig]) -> None:
        """Make Redis hold each of `configs` (the bulk path), PUSH_CHUNK budgets per script
        call so that Redis is never held for long."""
        by_org: dict[str, list[BudgetConfig]] = {}
        for c in configs:
            by_org.setdefault(c.org, []).append(c)
        for org, budgets in by_org.items():
            await redis_call(self.client.sadd(keys.ORGS, org))
            for start in range(0, len(budgets), PUSH_CHUNK):
                await self._sync(org, budgets[start : start + PUSH_CHUNK], [])

    async def remove(self, config: BudgetConfig) -> None:
        """Drop a deleted budget from Redis."""
        await self.scripts.run(
            "delete_budget",
            [
                keys.config(config.org),
                keys.budget(config.org, config.uid),
                keys.config_changes(config.org),
            ],
            [config.uid],
        )

    async def reconcile(self, repo: BudgetRepository) -> int:
        """Make every org's configuration in Redis equal PostgreSQL's; returns orgs changed.

        Redis is read before PostgreSQL, so a budget created in between is never dropped, and
        the script skips budgets Redis holds at a newer version: safe beside live upserts.
        Only versions are compared (config_check.lua, CHECK_CHUNK budgets a call); just the
        budgets that differ are read in full and pushed, so with nothing to mend an org of
        100,000 budgets costs a few milliseconds of Redis at a time, never one long script.
        """
        known: set[str] = await redis_call(self.client.smembers(keys.ORGS))
        before: dict[str, list[str]] = {}
        for org in known:
            uids = await redis_call(self.client.hkeys(keys.config(org)))
            before[org] = [u for u in uids if not u.startswith("_")]  # `_v` etc. are no uids
        versions = await repo.versions_by_org()
        changed = 0
        for org in sorted(known | set(versions)):
            in_pg = versions.get(org, {})
            keep = {str(uid) for uid in in_pg}
            drop = [uid for uid in before.get(org, []) if uid not in keep]
            outdated = await self._outdated(org, in_pg)
            budgets = await repo.get_many(org, outdated) if outdated else []
            org_changed = False
            for start in range(0, len(budgets), PUSH_CHUNK):
                reply = await self._sync(org, budgets[start : start + PUSH_CHUNK], [])
                org_changed = org_changed or bool(reply[1])
            for start in range(0, len(drop), PUSH_CHUNK):
                reply = await self._sync(org, [], drop[start : start + PUSH_CHUNK])
                org_changed = org_changed or bool(reply[1])
            if in_pg:
                await redis_call(self.client.sadd(keys.ORGS, org))
            changed += org_changed
        if changed:
            log.info("config.reconciled", orgs=len(known | set(versions)), orgs_changed=changed)
        return changed

    async def _outdated(self, org: str, versions: dict[int, int]) -> list[int]:
        """The uids whose copy in Redis is missing or older than PostgreSQL's `versions`."""
        uids = sorted(versions)
        outdated: list[int] = []
        for start in range(0, len(uids), CHECK_CHUNK):
            chunk = uids[start : start + CHECK_CHUNK]
            args: list[str | int] = []
            for uid in chunk:
                args += [uid, versions[uid]]
            reply = await self.scripts.run(
                "config_check",
                [keys.config(org), *(keys.budget(org, uid) for uid in chunk)],
                args,
            )
            outdated += [int(uid) for uid in reply[0] or []]
        return outdated

    async def _sync(self, org: str, budgets: list[BudgetConfig], drop: list[str]) -> Any:
        """One sync_org call: write `budgets` where Redis is older, drop the `drop` uids."""
        args: list[str | int] = [len(budgets)]
        for b in budgets:
            args += [b.uid, b.to_json(), b.id, b.limit_nanos, b.overdraft_nanos, b.mode_name,
                     b.version]  # fmt: skip
        args += drop
        return await self.scripts.run(
            "sync_org",
            [
                keys.config(org),
                keys.config_changes(org),
                *(keys.budget(org, b.uid) for b in budgets),
                *(keys.budget(org, uid) for uid in drop),
            ],
            args,
        )
