"""The Redis key layout, in one place.

Every key of an org carries the hash tag `{org}`, so all keys one script touches live in one
slot and the same scripts run on Redis Cluster, sharded by org. Org, budget and reservation ids
are validated (servicekit/validation.py) so they can never contain `{` or `}`.

    ba:{org}:cfg          hash   `_v` -> config version; `_e` -> data-set epoch;
                                 <budget uid> -> budget config JSON; fields starting with `_`
                                 are the hash's own (`_f`: the change log's floor), never budgets
    ba:{org}:cfg:changes  zset   budget uids by the config version of their last change (the
                                 newest 10,000), so caches catch up on just what changed
    ba:{org}:b:<uid>      hash   one budget's limit, overdraft, mode and period counters
    ba:{org}:r:<id>       hash   one reservation: state, amount, budgets, expiry, answers
    ba:{org}:exp          zset   held reservation ids scored by expiry (ms), for the sweeper
    ba:{org}:ledger       stream the outbox: every money event, drained into PostgreSQL
    ba:orgs               set    orgs with recent activity or budgets (the sweeper's and the
                                 ledger writer's list; idle orgs are pruned; not per slot)
    ba:epoch              string the data-set epoch sentinel (budget_service/config/epoch.py)
"""

from __future__ import annotations

ORGS = "ba:orgs"
EPOCH = "ba:epoch"
LEDGER_GROUP = "ledger"  # the ledger writers' consumer group on every outbox stream


def config(org: str) -> str:
    """The org's budget configuration hash."""
    return f"ba:{{{org}}}:cfg"


def config_changes(org: str) -> str:
    """The org's configuration change log: uid -> version of its last change."""
    return f"ba:{{{org}}}:cfg:changes"


def budget(org: str, uid: int | str) -> str:
    """One budget's state hash (keyed by its uid, so a re-created budget starts afresh)."""
    return f"ba:{{{org}}}:b:{uid}"


def reservation(org: str, reservation_id: str) -> str:
    """One reservation's record."""
    return f"ba:{{{org}}}:r:{reservation_id}"


def expiries(org: str) -> str:
    """The org's held reservations by expiry."""
    return f"ba:{{{org}}}:exp"


def ledger(org: str) -> str:
    """The org's ledger outbox stream."""
    return f"ba:{{{org}}}:ledger"
