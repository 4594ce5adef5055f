"""`budgetctl budgets ...` and `budgetctl reservations list`: budget admin over gRPC."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from budgetctl.output import (
    EXIT_OK,
    UsageError,
    admin_stub,
    as_dict,
    nanos_from_usd,
    print_fields,
    print_json,
    print_table,
    usd,
)
from genproto.budget.v1 import budget_pb2 as pb

PERIODS = {name.removeprefix("PERIOD_").lower(): value for name, value in pb.Period.items()}
PERIODS.pop("unspecified")
MODES = {name.removeprefix("MODE_").lower(): value for name, value in pb.Mode.items()}
MODES.pop("unspecified")
ACTOR_METADATA = "x-actor"


def add_parsers(sub: Any) -> None:
    budgets = sub.add_parser("budgets", help="create, list, show, delete budgets; their status")
    verbs = budgets.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser(
        "create",
        help="create or replace a budget (an upsert: the version goes up)",
        description="Create a budget, or replace the one with this id. Selector keys: team,"
        " project, user, provider, model, tag:<name>; no selector covers the whole org.",
    )
    create.add_argument("--org", required=True)
    create.add_argument("--id", required=True, help="budget id, unique in the org")
    limit = create.add_mutually_exclusive_group(required=True)
    limit.add_argument("--limit-usd", help="the limit in dollars, e.g. 250 or 0.05")
    limit.add_argument("--limit-nanos", type=int, help="the limit in nano-USD")
    create.add_argument("--period", choices=PERIODS, default="month")
    create.add_argument("--timezone", default="UTC", help="IANA zone periods align to")
    create.add_argument(
        "--mode",
        choices=MODES,
        default="hard",
        help="hard refuses, soft admits and flags, shadow only records",
    )
    create.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="repeatable: --selector team=search --selector tag:env=prod",
    )
    create.add_argument(
        "--overdraft-usd", default="0", help="extra room for critical-priority requests"
    )
    create.add_argument(
        "--alert",
        action="append",
        type=int,
        default=[],
        metavar="PERCENT",
        help="alert thresholds (repeatable; default 50 75 90 100)",
    )
    create.add_argument("--actor", help="who makes the change (recorded in the audit trail)")
    _format(create)

    listing = verbs.add_parser("list", help="an org's budgets")
    listing.add_argument("--org", required=True)
    _format(listing)
    for verb, text in (
        ("show", "one budget's configuration"),
        ("status", "spend, holds and room of a budget's current period"),
        ("delete", "remove a budget"),
    ):
        p = verbs.add_parser(verb, help=text)
        p.add_argument("--org", required=True)
        p.add_argument("--id", required=True)
        if verb == "delete":
            p.add_argument("--actor", help="who makes the change (recorded in the audit trail)")
        _format(p)

    reservations = sub.add_parser("reservations", help="list an org's live holds")
    rverbs = reservations.add_subparsers(dest="verb", required=True, metavar="VERB")
    rlist = rverbs.add_parser("list", help="live holds, soonest expiry first")
    rlist.add_argument("--org", required=True)
    _format(rlist)


def _format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "json"), default="table")


def _selector(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--selector {pair!r}: write KEY=VALUE, e.g. team=search")
        out[key] = value
    return out


def _metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    actor = getattr(args, "actor", None) or ""
    return ((ACTOR_METADATA, f"budgetctl:{actor}" if actor else "budgetctl"),)


def budget_row(b: pb.Budget) -> dict[str, Any]:
    return {
        "id": b.id,
        "selector": ",".join(f"{k}={v}" for k, v in sorted(b.selector.items())) or "(org)",
        "limit_usd": usd(b.limit_nanos),
        "period": pb.Period.Name(b.period).removeprefix("PERIOD_").lower(),
        "timezone": b.timezone,
        "mode": pb.Mode.Name(b.mode).removeprefix("MODE_").lower(),
        "version": b.version,
    }


async def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    async with admin_stub(args) as stub:
        if args.command == "reservations":
            found = await stub.ListReservations(
                pb.ListReservationsRequest(org=args.org, page_size=1000), timeout=args.timeout
            )
            rows = [as_dict(r) for r in found.reservations]
            if args.format == "json":
                print_json(rows, out)
            else:
                table = [
                    {
                        "reservation_id": r.reservation_id,
                        "reserved_usd": usd(r.reserved_nanos),
                        "expires_at": r.expires_at.ToJsonString(),
                        "budgets": ",".join(r.budget_ids),
                    }
                    for r in found.reservations
                ]
                print_table(("reservation_id", "reserved_usd", "expires_at", "budgets"), table, out)
            return EXIT_OK
        if args.verb == "create":
            budget = pb.Budget(
                org=args.org,
                id=args.id,
                selector=_selector(args.selector),
                limit_nanos=(
                    args.limit_nanos
                    if args.limit_nanos is not None
                    else nanos_from_usd("--limit-usd", args.limit_usd)
                ),
                period=PERIODS[args.period],  # type: ignore[arg-type]
                timezone=args.timezone,
                mode=MODES[args.mode],  # type: ignore[arg-type]
                overdraft_nanos=nanos_from_usd("--overdraft-usd", args.overdraft_usd),
                alert_thresholds_percent=args.alert,
            )
            saved = await stub.UpsertBudget(
                pb.UpsertBudgetRequest(budget=budget),
                timeout=args.timeout,
                metadata=_metadata(args),
            )
            _show(saved, args.format)
        elif args.verb == "list":
            budgets, token = [], ""
            for _ in range(10_000):  # pages of 1000, bounded
                page = await stub.ListBudgets(
                    pb.ListBudgetsRequest(org=args.org, page_size=1000, page_token=token),
                    timeout=args.timeout,
                )
                budgets += list(page.budgets)
                token = page.next_page_token
                if not token:
                    break
            if args.format == "json":
                print_json([as_dict(b) for b in budgets], out)
            else:
                print_table(
                    tuple(budget_row(pb.Budget()).keys()), [budget_row(b) for b in budgets], out
                )
        elif args.verb == "show":
            _show(
                await stub.GetBudget(
                    pb.GetBudgetRequest(org=args.org, budget_id=args.id), timeout=args.timeout
                ),
                args.format,
            )
        elif args.verb == "status":
            st = await stub.GetBudgetStatus(
                pb.GetBudgetStatusRequest(org=args.org, budget_id=args.id), timeout=args.timeout
            )
            if args.format == "json":
                print_json(as_dict(st), out)
            else:
                print_fields(
                    {
                        "budget": st.budget.id,
                        "limit_usd": usd(st.budget.limit_nanos),
                        "spent_usd": usd(st.spent_nanos),
                        "reserved_usd": usd(st.reserved_nanos),
                        "remaining_usd": usd(st.remaining_nanos),
                        "period_start": st.period_start.ToJsonString(),
                        "period_end": st.period_end.ToJsonString(),
                        "utilization_percent": st.utilization_percent,
                        "alert_threshold_reached_percent": st.alert_threshold_reached_percent,
                    },
                    out,
                )
        elif args.verb == "delete":
            await stub.DeleteBudget(
                pb.DeleteBudgetRequest(org=args.org, budget_id=args.id),
                timeout=args.timeout,
                metadata=_metadata(args),
            )
            print(f"deleted budget {args.id!r} of org {args.org!r}")
    return EXIT_OK


def _show(budget: pb.Budget, fmt: str) -> None:
    if fmt == "json":
        print_json(as_dict(budget), sys.stdout)
    else:
        print_fields(budget_row(budget), sys.stdout)
