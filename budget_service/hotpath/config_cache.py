"""Each org's budget configuration, cached in process, indexed by selector, kept honest by a
version check.

The reserve, commit and refund scripts compare the version the cache was read at with the
version in Redis; on a mismatch they change nothing and answer STALE, and the cache catches up
before the call is tried again. So a budget added through another replica is never skipped.

Catching up reads only what changed. Every script that changes an org's configuration bumps its
version and logs each changed budget's uid with it in `ba:{org}:cfg:changes` (keys.py);
config_changes.lua answers the budgets changed since the cache's version, and only those are
parsed. When the log no longer reaches back that far, or the fields of the hash do not add up,
the whole org is read again (one HGETALL), as at first use.

Matching scales the same way: a budget covers a subject when its selector pairs are a subset of
the subject's. The index maps each selector to its budgets and counts the distinct selector
*key sets* in the org ({} for the org cap, {team}, {user}, {project, provider}, ...). A lookup
projects the subject onto each key set that is a subset of the subject's keys and reads that one
entry: its cost follows the number of key sets (or of subsets of the subject's keys, when those
are fewer), never the number of budgets.

The cache also knows each org's data-set epoch (`_e` in the config hash, see
budget_service/config/epoch.py) and which orgs have budgets in PostgreSQL: an org that should
have budgets but whose config hash has no epoch (or another one) has lost its data in Redis,
and reading it raises DataLost instead of caching an empty org that would admit everything.
An entry expects the epoch (the scripts then answer LOST when the hash is gone) from the moment
the cache learns the org has, or may have, budgets: its hash carried the epoch when read, the
config moved on from the version cached (only budget writes move it, with the epoch in place),
PostgreSQL or this process's own writes say so, or a call found the org lost. An entry cached
while the org had no budget, which never learnt of the first one, is covered by the scripts:
they treat a hash without epoch as lost when the org's change log exists (lib.lua
config_check).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from itertools import combinations

from budget_service.hotpath import keys
from budget_service.hotpath.budgets import BudgetConfig
from budget_service.hotpath.errors import DataLost
from budget_service.hotpath.store import Scripts, redis_call
from servicekit.errors import Unavailable

Pairs = frozenset[tuple[str, str]]
KeySet = frozenset[str]  # the keys of a selector
MAX_ORGS = 100_000  # cached orgs per process, beyond which the cache starts over
PARSE_SLICE = 2000  # budgets parsed between two turns of the event loop on a whole-org read
READ_SLICE = 5000  # config fields per HSCAN call when an org is larger than this
READ_ATTEMPTS = 5


class OrgBudgets:
    """An org's budgets at one configuration version, indexed by selector.

    The cache updates it in place when the org's configuration changes, in one synchronous step
    (no await inside), so everything read from it between two awaits belongs to one version.
    """

    def __init__(
        self,
        version: str,
        budgets: Iterable[BudgetConfig] = (),
        header_fields: int = 1,
        epoch: str = "",
    ) -> None:
        self.version = version
        # the data-set epoch the scripts must find in the config hash ('' for an org with none)
        self.epoch = epoch
        # Fields of the config hash that are the hash's own (`_v`, `_f`, ...), as of the last
        # whole-org read: a new one (the log's floor appearing) costs one more whole read.
        self.header_fields = header_fields
        self.by_uid: dict[int, BudgetConfig] = {}
        self._by_selector: dict[Pairs, tuple[BudgetConfig, ...]] = {}
        self._key_sets: dict[KeySet, int] = {}  # key set -> how many budgets have it
        for b in budgets:
            self.add(b)

    @property
    def budgets(self) -> list[BudgetConfig]:
        """Every budget, by id."""
        return sorted(self.by_uid.values(), key=_by_id)

    @property
    def key_sets(self) -> list[tuple[str, ...]]:
        """The distinct selector key sets of the org (what one lookup costs), sorted."""
        return sorted(tuple(sorted(ks)) for ks in self._key_sets)

    def covering(self, pairs: Pairs) -> list[BudgetConfig]:
        """The budgets whose selector is a subset of the subject, by id."""
        values = dict(pairs)
        subject_keys = values.keys()
        found: list[BudgetConfig] = []
        for key_set in self._candidate_key_sets(values):
            if key_set <= subject_keys:
                hit = self._by_selector.get(frozenset([(k, values[k]) for k in key_set]))
                if hit is not None:
                    found.extend(hit)
        if len(found) > 1:
            found.sort(key=_by_id)
        return found

    def _candidate_key_sets(self, values: dict[str, str]) -> Iterable[KeySet]:
        """Every key set of the org, or the subsets of the subject's keys when fewer (an org
        with many distinct tag names)."""
        if len(self._key_sets) <= 1 << len(values):
            return self._key_sets
        return [
            key_set
            for size in range(len(values) + 1)
            for names in combinations(values, size)
            if (key_set := frozenset(names)) in self._key_sets
        ]

    def apply(self, version: str, changes: dict[int, BudgetConfig | None]) -> None:
        """Move to `version`: each changed uid gets its new config (None: deleted)."""
        for uid, config in changes.items():
            old = self.by_uid.pop(uid, None)
            if old is not None:
                self._remove(old)
            if config is not None:
                self.add(config)
        self.version = version

    def add(self, b: BudgetConfig) -> None:
        """Index one more budget (while building; changes go through apply)."""
        self.by_uid[b.uid] = b
        self._by_selector[b.pairs] = (*self._by_selector.get(b.pairs, ()), b)
        key_set = frozenset(b.selector)
        self._key_sets[key_set] = self._key_sets.get(key_set, 0) + 1

    def _remove(self, b: BudgetConfig) -> None:
        rest = tuple(x for x in self._by_selector.get(b.pairs, ()) if x is not b)
        if rest:
            self._by_selector[b.pairs] = rest
        else:
            self._by_selector.pop(b.pairs, None)
        key_set = frozenset(b.selector)
        left = self._key_sets.get(key_set, 0) - 1
        if left > 0:
            self._key_sets[key_set] = left
        else:
            self._key_sets.pop(key_set, None)


class ConfigCache:
    """Org -> OrgBudgets, read from the `ba:{org}:cfg` hash and its change log."""

    def __init__(self, scripts: Scripts, *, epoch: str = "") -> None:
        self.scripts = scripts
        self.client = scripts.client
        # the epoch this PostgreSQL database writes into every org's config ('' before it is
        # known: then nothing is checked, as in tools that only read)
        self.epoch = epoch
        # orgs PostgreSQL has budgets for: their config hash must carry the epoch
        self._budgeted: set[str] = set()
        # Told when an org turns out to have lost its data in Redis; answers the error for the
        # call (the server wires the automatic rebuild here: "rebuilding", or a foreign data set).
        self.on_lost: Callable[[str], DataLost] = DataLost
        self._orgs: dict[str, OrgBudgets] = {}
        # One whole-org read at a time per org: a burst of calls to an org not yet cached (or
        # whose log no longer reaches back) shares it instead of each parsing every budget.
        self._loading: dict[str, asyncio.Task[OrgBudgets]] = {}

    def lost(self, org: str) -> DataLost:
        """The error for a call that found the org's data gone; starts the rebuild if allowed.

        The org stays expected to carry the epoch (until PostgreSQL says it has no budgets):
        the next read of its now empty hash must not cache it as an org without budgets.
        """
        self._orgs.pop(org, None)
        self._budgeted.add(org)
        return self.on_lost(org)

    def set_budgeted(self, orgs: Iterable[str]) -> None:
        """Replace the set of orgs that have budgets in PostgreSQL."""
        self._budgeted = set(orgs)
        for org in self._budgeted:
            self._expect_epoch(org)

    def add_budgeted(self, org: str) -> None:
        """The org has budgets (one was just written)."""
        self._budgeted.add(org)
        self._expect_epoch(org)

    def _expect_epoch(self, org: str) -> None:
        """From now on the org's cached entry (if any) expects the epoch in its config hash."""
        cached = self._orgs.get(org)
        if cached is not None and self.epoch:
            cached.epoch = self.epoch

    def forget(self, org: str) -> None:
        """Drop the org's entry: the next call reads it from Redis again."""
        self._orgs.pop(org, None)

    def _check_epoch(self, org: str, found: str | None, fenced: str | None) -> None:
        if fenced is not None or (
            self.epoch
            and (
                (found is None and org in self._budgeted)
                or (found is not None and found != self.epoch)
            )
        ):
            raise self.lost(org)

    async def check_intact(self, org: str) -> None:
        """DataLost when the org should have budgets but Redis lost its config, or while it is
        rebuilt (one HMGET)."""
        found, fenced = await redis_call(self.client.hmget(keys.config(org), "_e", "_x"))
        self._check_epoch(org, found, fenced)

    async def get(self, org: str) -> OrgBudgets:
        """The cached configuration, loaded on first use."""
        cached = self._orgs.get(org)
        return cached if cached is not None else await self._load(org)

    async def refresh(self, org: str) -> OrgBudgets:
        """Catch up with the org's configuration in Redis, reading only what changed."""
        cached = self._orgs.get(org)
        if cached is None:
            return await self._load(org)
        reply = await self.scripts.run(
            "config_changes", [keys.config(org), keys.config_changes(org)], [cached.version]
        )
        if reply[0] == "SAME":
            return cached
        if reply[0] == "CHANGES":
            _, version, fields, uids, configs = reply
            if int(version) <= int(cached.version):  # a concurrent refresh got further
                return cached
            changes = {
                int(uid): BudgetConfig.from_json(raw) if raw else None
                for uid, raw in zip(uids, configs, strict=True)
            }
            # A field count that does not add up means something the log did not say (the
            # hash re-created behind a version that caught up, or a new field of its own):
            # then read it all, and never show callers the doubtful state in between.
            after = len(cached.by_uid) + sum(
                (config is not None) - (uid in cached.by_uid) for uid, config in changes.items()
            )
            if fields == after + cached.header_fields:
                cached.apply(version, changes)
                # The config moved: budgets were written, and with them the epoch.
                if self.epoch:
                    cached.epoch = self.epoch
                return cached
        return await self._load(org)

    async def _load(self, org: str) -> OrgBudgets:
        """Read the whole org; concurrent callers share one read, which a caller's
        cancellation does not stop."""
        task = self._loading.get(org)
        if task is None:
            task = asyncio.create_task(self._read_all(org))
            self._loading[org] = task
            task.add_done_callback(lambda done: self._loaded(org, done))
        return await asyncio.shield(task)

    def _loaded(self, org: str, task: asyncio.Task[OrgBudgets]) -> None:
        if self._loading.get(org) is task:
            del self._loading[org]
        if not task.cancelled():
            task.exception()  # retrieved, even when every caller was cancelled meanwhile

    async def _read_all(self, org: str) -> OrgBudgets:
        raw = await self._config_hash(org)
        self._check_epoch(org, raw.get("_e"), raw.get("_x"))
        header = sum(1 for name in raw if name.startswith("_"))
        entry = OrgBudgets(raw.get("_v", "0"), (), header, raw.get("_e", ""))
        for done, (name, value) in enumerate(raw.items(), 1):
            if not name.startswith("_"):
                entry.add(BudgetConfig.from_json(value))
            if done % PARSE_SLICE == 0:
                # Parsing 100,000 budgets takes a second or two: let other calls run meanwhile
                # (the entry is seen by nobody until it is complete).
                await asyncio.sleep(0)
        if len(self._orgs) > MAX_ORGS:
            self._orgs.clear()
        self._orgs[org] = entry
        return entry

    async def _config_hash(self, org: str) -> dict[str, str]:
        """The org's whole config hash. A large one is read in slices (HSCAN), each well within
        the Redis timeout that keeps the hot path failing closed fast, and kept only if the
        version did not move meanwhile (else read again)."""
        key = keys.config(org)
        if await redis_call(self.client.hlen(key)) <= READ_SLICE:
            small: dict[str, str] = await redis_call(self.client.hgetall(key))
            return small
        for _ in range(READ_ATTEMPTS):
            version = await redis_call(self.client.hget(key, "_v"))
            raw: dict[str, str] = {}
            cursor = 0
            while True:
                cursor, page = await redis_call(self.client.hscan(key, cursor, count=READ_SLICE))
                raw.update(page)
                if cursor == 0:
                    break
            if await redis_call(self.client.hget(key, "_v")) == version == raw.get("_v"):
                return raw
        raise Unavailable(
            f"org {org!r}'s budget configuration kept changing while it was read; retry"
        )


def _by_id(budget: BudgetConfig) -> str:
    return budget.id
