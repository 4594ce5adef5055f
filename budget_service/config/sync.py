"""Copies budget configuration from PostgreSQL (the source of truth) into Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from budget_service.config.budget_repo import BudgetRepository
from budget_service.hotpath import keys
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.config_cache import ConfigCache
from budget_service.hotpath.errors import DataLost, OrgRebuilding
from budget_service.hotpath.store import Scripts, redis_call

log = structlog.get_logger(__name__)


PUSH_CHUNK = 1000  # budgets per sync_org call when many are pushed at once
CHECK_CHUNK = 2000  # budgets per config_check call


def budget_args(b: BudgetConfig) -> list[str | int]:
    """A budget's config as the upsert_budget, sync_org and restore scripts take it."""
    return [b.uid, b.to_json(), b.id, b.limit_nanos, b.overdraft_nanos, b.mode_name, b.version]


class ConfigSync:
    """Pushes one budget's change, or a whole org's configuration, to Redis.

    `epoch` is this database's data-set epoch (budget_service/config/epoch.py): an org whose
    config in Redis lacks it has lost its data, and is handed to `on_lost` (the rebuild) instead
    of being written with counters that start from zero. An org being rebuilt from the ledger
    (fenced) takes no config writes: OrgRebuilding, and the next reconcile (or the one the
    rebuild asks for when it is done, `reconcile_org`) applies what PostgreSQL saved meanwhile.
    """

    def __init__(self, scripts: Scripts, epoch: str, cache: ConfigCache | None = None) -> None:
        self.scripts = scripts
        self.client = scripts.client
        self.epoch = epoch
        # told which orgs have budgets (every reconcile, every push): their config must carry
        # the epoch, so the cache can tell a lost org from one that never had budgets
        self.cache = cache
        # the error for an org found lost (the server's starts its rebuild)
        self.on_lost: Callable[[str], DataLost] = DataLost

    async def push(self, config: BudgetConfig, *, first_of_org: bool = False) -> None:
        """Make Redis hold `config` (a newer version than any it holds).

        `first_of_org`: the org's only budget, just created, so nothing of the org can have been
        lost: it may write the org's epoch.
        """
        if self.cache is not None:
            self.cache.add_budgeted(config.org)
        await redis_call(self.client.sadd(keys.ORGS, config.org))
        reply = await self.scripts.run(
            "upsert_budget",
            [
                keys.config(config.org),
                keys.budget(config.org, config.uid),
                keys.config_changes(config.org),
            ],
            [*budget_args(config), self.epoch, "1" if first_of_org else "0"],
        )
        if reply[0] == "LOST":
            raise self._lost(config.org)
        if reply[0] == "FENCED":
            raise OrgRebuilding(config.org, f"budget {config.id!r} version {config.version}")

    def _lost(self, org: str) -> DataLost:
        return self.cache.lost(org) if self.cache is not None else DataLost(org)

    async def push_many(self, configs: list[BudgetConfig], *, new_orgs: bool = False) -> None:
        """Make Redis hold each of `configs` (the bulk path), PUSH_CHUNK budgets per script
        call so that Redis is never held for long. `new_orgs`: their orgs had no budget before
        (they may write the epoch)."""
        by_org: dict[str, list[BudgetConfig]] = {}
        for c in configs:
            by_org.setdefault(c.org, []).append(c)
        for org, budgets in by_org.items():
            if self.cache is not None:
                self.cache.add_budgeted(org)
            await redis_call(self.client.sadd(keys.ORGS, org))
            for start in range(0, len(budgets), PUSH_CHUNK):
                await self._sync(org, budgets[start : start + PUSH_CHUNK], [], new_orgs)

    async def remove(self, config: BudgetConfig) -> None:
        """Drop a deleted budget from Redis."""
        reply = await self.scripts.run(
            "delete_budget",
            [
                keys.config(config.org),
                keys.budget(config.org, config.uid),
                keys.config_changes(config.org),
            ],
            [config.uid],
        )
        if reply[0] == "FENCED":
            raise OrgRebuilding(config.org, f"the deletion of budget {config.id!r}")

    async def reconcile(self, repo: BudgetRepository, *, adopt: bool = False) -> int:
        """Make every org's configuration in Redis equal PostgreSQL's; returns orgs changed.

        Redis is read before PostgreSQL, so a budget created in between is never dropped, and
        the script skips budgets Redis holds at a newer version: safe beside live upserts. An
        org that lost its data is left alone and handed to `on_lost`; `adopt` writes the epoch
        into orgs that have none (the first start on a Redis that predates the epoch).
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
        if self.cache is not None:
            self.cache.set_budgeted(versions)
        changed = 0
        lost = []
        for org in sorted(known | set(versions)):
            in_pg = versions.get(org, {})
            org_changed = await self._reconcile_org(repo, org, in_pg, before.get(org, []), adopt)
            if org_changed is None:
                lost.append(org)
            changed += bool(org_changed)
        if changed:
            log.info("config.reconciled", orgs=len(known | set(versions)), orgs_changed=changed)
        if lost:
            log.error("config.data_lost", orgs=lost[:20], count=len(lost))
        return changed

    async def reconcile_org(self, repo: BudgetRepository, org: str) -> bool:
        """Make one org's configuration in Redis equal PostgreSQL's (after its rebuild, for the
        changes refused while it was fenced); answers whether anything changed."""
        uids = await redis_call(self.client.hkeys(keys.config(org)))
        in_pg = await repo.versions_in_org(org)
        if self.cache is not None and in_pg:
            self.cache.add_budgeted(org)
        before = [u for u in uids if not u.startswith("_")]
        return bool(await self._reconcile_org(repo, org, in_pg, before, adopt=False))

    async def _reconcile_org(
        self, repo: BudgetRepository, org: str, in_pg: dict[int, int], before: list[str],
        adopt: bool,
    ) -> bool | None:  # fmt: skip
        """Sync one org (`before`: its uids in Redis, read before PostgreSQL's `in_pg`);
        answers whether it changed, False for an org being rebuilt (the next run syncs it),
        None for one that lost its data (handed to `on_lost`)."""
        if in_pg and not await self._intact(org, adopt):
            self.on_lost(org)
            return None
        keep = {str(uid) for uid in in_pg}
        drop = [uid for uid in before if uid not in keep]
        outdated = await self._outdated(org, in_pg)
        budgets = await repo.get_many(org, outdated) if outdated else []
        org_changed = False
        try:
            for start in range(0, len(budgets), PUSH_CHUNK):
                reply = await self._sync(org, budgets[start : start + PUSH_CHUNK], [], adopt)
                org_changed = org_changed or bool(reply[1])
            for start in range(0, len(drop), PUSH_CHUNK):
                reply = await self._sync(org, [], drop[start : start + PUSH_CHUNK])
                org_changed = org_changed or bool(reply[1])
        except DataLost:  # lost while being synced: the rebuild has it
            return None
        except OrgRebuilding:  # fenced: its rebuild reads PostgreSQL, then syncs it again
            return org_changed
        if in_pg:
            await redis_call(self.client.sadd(keys.ORGS, org))
        return org_changed

    async def _intact(self, org: str, adopt: bool) -> bool:
        """Whether the org's config carries the epoch (writing it when adopting)."""
        found = await redis_call(self.client.hget(keys.config(org), "_e"))
        if found == self.epoch:
            return True
        if found is None and adopt:
            await redis_call(self.client.hset(keys.config(org), "_e", self.epoch))
            return True
        return False

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

    async def _sync(
        self, org: str, budgets: list[BudgetConfig], drop: list[str], init: bool = False
    ) -> Any:
        """One sync_org call: write `budgets` where Redis is older, drop the `drop` uids."""
        args: list[str | int] = [self.epoch, "1" if init else "0", len(budgets)]
        for b in budgets:
            args += budget_args(b)
        args += drop
        reply = await self.scripts.run(
            "sync_org",
            [
                keys.config(org),
                keys.config_changes(org),
                *(keys.budget(org, b.uid) for b in budgets),
                *(keys.budget(org, uid) for uid in drop),
            ],
            args,
        )
        if reply[0] == "LOST":
            raise self._lost(org)
        if reply[0] == "FENCED":
            raise OrgRebuilding(org, "the org's budget configuration")
        return reply
