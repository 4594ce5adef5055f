"""`budgetctl ledger`: the ledger's dead letters, listed and requeued (straight from the stores).

Exit codes: `dead-letters` 0 when there are none, 1 when some are listed (money the counters
saw and the ledger did not store: act on them); `requeue` 0 when done, 3 when an id given is not
a dead letter of that org; both 2 on bad usage and 4 when PostgreSQL or Redis is unreachable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from budget_service.hotpath import store
from budget_service.ledger import dead_letters
from budgetctl.output import (
    EXIT_DIFFERENCES,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    UsageError,
    print_json,
    print_table,
)
from servicekit import db
from servicekit.errors import ConfigError, Unavailable
from servicekit.settings import Settings

ERROR_WIDTH = 100  # the table shows this much of each error; --format json shows all


def add_parsers(sub: Any) -> None:
    ledger = sub.add_parser(
        "ledger",
        help="the ledger's dead letters: events it could not store (list, requeue)",
        description="Events the ledger writer set aside instead of letting them stop the"
        " ledger: entries it could not read and events PostgreSQL refused. Reads DATABASE_URL"
        " (and REDIS_URL to requeue).",
    )
    commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "dead-letters",
        help="list dead letters (exit 1 when there are any)",
        description="List dead letters, oldest first per org: the event, why it failed, when"
        " and how often. Exit 0: none; 1: some (listed). Fix the cause, then requeue them.",
    )
    listing.add_argument("--org", help="only this org")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    requeue = commands.add_parser(
        "requeue",
        help="put dead letters back in their org's outbox, once the cause is fixed",
        description="Append dead letters, unchanged, to their org's outbox again and remove"
        " them from the table; the ledger writer then stores them like any event (an event"
        " stored meanwhile is skipped by its id). One that fails again is dead-lettered again.",
    )
    requeue.add_argument("--org", required=True)
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, action="append", dest="ids", help="repeatable")
    which.add_argument("--all", action="store_true", help="every dead letter of the org")


async def run(args: argparse.Namespace) -> int:
    """Run a `ledger` command; answers its exit code."""
    if args.ledger_command == "dead-letters" and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give a positive number")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise UsageError(exc.message) from exc
    if not settings.database_url:
        raise UsageError("DATABASE_URL must be set (the ledger's PostgreSQL)")
    if args.ledger_command == "requeue" and not settings.redis_url:
        raise UsageError("REDIS_URL must be set (requeue appends to the org's outbox)")
    try:
        pool = await db.connect(settings.database_url, max_size=2)
        try:
            async with db.guard():
                if args.ledger_command == "dead-letters":
                    return await _list(pool, args)
                return await _requeue(pool, settings.redis_url, args)
        finally:
            await pool.close()
    except Unavailable as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE


async def _list(pool: Any, args: argparse.Namespace) -> int:
    found = await dead_letters.list_dead_letters(pool, org=args.org, limit=args.limit)
    if args.format == "json":
        print_json([d.to_dict() for d in found], sys.stdout)
        return EXIT_DIFFERENCES if found else EXIT_OK
    rows = [
        {
            "id": d.id,
            "org": d.org,
            "stream_id": d.stream_id,
            "event_id": d.event_id or "(unreadable)",
            "reason": d.reason,
            "failures": d.failures,
            "first_failed_at": d.first_failed_at.isoformat(timespec="seconds"),
            "error": " ".join(d.error.split())[:ERROR_WIDTH],
        }
        for d in found
    ]
    columns = ["id", "org", "stream_id", "event_id", "reason", "failures", "first_failed_at"]
    print_table([*columns, "error"], rows, sys.stdout)
    if found:
        print(
            f"{len(found)} dead letter(s): events the counters count and the ledger lacks."
            " --format json shows each entry and the whole error; once the cause is fixed:"
            " budgetctl ledger requeue --org ORG --id ID (or --all)"
        )
    return EXIT_DIFFERENCES if found else EXIT_OK


async def _requeue(pool: Any, redis_url: str, args: argparse.Namespace) -> int:
    client = store.connect(redis_url, timeout_seconds=5.0, pool_size=2)
    try:
        done, missing = await store.redis_call(
            dead_letters.requeue(pool, client, args.org, None if args.all else args.ids)
        )
    finally:
        await client.aclose()
    for dead_letter_id, stream_id in done:
        print(f"requeued dead letter {dead_letter_id} of {args.org} as outbox entry {stream_id}")
    if not done and not missing:
        print(f"no dead letters for org {args.org!r}")
    if missing:
        listed = ", ".join(str(i) for i in missing)
        print(f"error: no dead letter {listed} for org {args.org!r}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK
