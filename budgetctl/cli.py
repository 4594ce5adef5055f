"""budgetctl: operate the budget authority from a shell or a script.

Exit codes a script can rely on:
  0  done (reconcile: no differences; ledger dead-letters: none)
  1  reconcile found differences; ledger dead-letters found some
  2  bad usage (a flag or value is wrong; the message names it)
  3  the service refused the request (bad argument, not found, ...); the message is the service's
  4  the service or a store could not be reached
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys

import grpc
import grpc.aio

from budgetctl import budgets, ledger, prices, report
from budgetctl.output import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, UNREACHABLE, UsageError

EPILOG = """examples:
  budgetctl budgets create --org acme --id monthly --limit-usd 2500 --period month
  budgetctl budgets create --org acme --id search-daily --limit-usd 50 --period day \\
      --selector team=search --timezone Europe/Paris
  budgetctl budgets list --org acme
  budgetctl budgets status --org acme --id monthly
  budgetctl reservations list --org acme
  budgetctl prices show gpt-4o
  budgetctl prices import model_prices_and_context_window.json
  budgetctl report --org acme --from 2026-11-01 --to 2026-12-01 --group-by team,model
  budgetctl report --org acme --from 2026-11-01 --to 2026-12-01 --group-by provider --format csv
  budgetctl reconcile            # Redis counters vs the PostgreSQL ledger; exit 1 on differences
  budgetctl reconcile --rebuild  # after Redis lost its data: counters and holds from the ledger
  budgetctl ledger dead-letters  # events the ledger set aside; exit 1 when there are any
  budgetctl ledger requeue --org acme --all   # once their cause is fixed

Addresses: --addr (else $BUDGET_ADDR, else 127.0.0.1:50051) and --pricing-addr (else
$PRICING_ADDR, else 127.0.0.1:50052). reconcile and ledger talk to the stores directly and
read REDIS_URL and DATABASE_URL. Amounts print in dollars (exact) and nano-USD in JSON.

exit codes: 0 done, 1 reconcile found differences or ledger dead-letters found some, 2 bad
usage, 3 the service refused the request, 4 the service or a store unreachable.
"""


def instant(text: str) -> dt.datetime:
    """A date (2026-11-01, midnight UTC) or an ISO time with an offset (2026-11-01T10:00Z)."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-11-01) or an ISO time (2026-11-01T10:00:00Z)"
        ) from exc
    if moment.tzinfo is None:
        if "T" in text or " " in text:
            raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. {text}Z")
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="budgetctl",
        description="Operate the LLM budget authority: budgets, holds, prices, spend reports"
        " and ledger reconciliation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "--addr",
        default=os.environ.get("BUDGET_ADDR", "127.0.0.1:50051"),
        help="budget service (default: $BUDGET_ADDR or 127.0.0.1:50051)",
    )
    top.add_argument(
        "--pricing-addr",
        default=os.environ.get("PRICING_ADDR", "127.0.0.1:50052"),
        help="pricing service (default: $PRICING_ADDR or 127.0.0.1:50052)",
    )
    top.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    budgets.add_parsers(sub)
    prices.add_parsers(sub, instant)
    report.add_parser(sub, instant)
    ledger.add_parsers(sub)
    rec = sub.add_parser(
        "reconcile",
        help="compare Redis counters with the ledger (or --rebuild them from it)",
        description="Compare every budget's Redis counters with the PostgreSQL ledger."
        " Exit 0: equal; 1: differences (printed). With --rebuild, restore counters and open"
        " holds from the ledger (after Redis lost its data; stop traffic first).",
    )
    rec.add_argument("--org")
    rec.add_argument("--rebuild", action="store_true")
    rec.add_argument("--json", action="store_true")
    return top


async def dispatch(args: argparse.Namespace) -> int:
    if args.command in ("budgets", "reservations"):
        return await budgets.run(args)
    if args.command == "prices":
        return await prices.run(args)
    if args.command == "ledger":
        return await ledger.run(args)
    return await report.run_report(args)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on bad usage, naming the flag
    if args.command == "reconcile":
        from budget_service.ledger import reconcile

        flags = [
            *(["--org", args.org] if args.org else []),
            *(["--rebuild"] if args.rebuild else []),
            *(["--json"] if args.json else []),
        ]
        return reconcile.run(flags)
    try:
        return asyncio.run(dispatch(args))
    except UsageError as exc:
        print(f"budgetctl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.code() in UNREACHABLE else EXIT_REFUSED
