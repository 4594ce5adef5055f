"""budgetctl: spend reports (table, CSV, JSON) and ledger reconciliation.

Exit codes a script can rely on:
  0  done (reconcile: no differences)
  1  reconcile found differences
  2  bad usage (a flag or value is wrong; the message names it)
  3  the service refused the request (bad argument, not found); the message is the service's
  4  the service or a store could not be reached
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import sys
from decimal import Decimal
from typing import Any, TextIO

import grpc
import grpc.aio

from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc

EXIT_OK, EXIT_DIFFERENCES, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
GRANULARITIES = {
    "hour": pb.GRANULARITY_HOUR,
    "day": pb.GRANULARITY_DAY,
    "week": pb.GRANULARITY_WEEK,
    "month": pb.GRANULARITY_MONTH,
}
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
NANOS_PER_USD = Decimal(10**9)

EPILOG = """examples:
  budgetctl report --org demo --from 2026-11-01 --to 2026-12-01 --group-by team,model
  budgetctl report --org demo --from 2026-11-24 --to 2026-11-25 --granularity hour --format csv
  budgetctl report --org demo --from 2026-11-01 --to 2026-12-01 --group-by provider --format json
  budgetctl reconcile            # Redis counters vs the PostgreSQL ledger; exit 1 on differences
  budgetctl reconcile --rebuild  # after Redis lost its data: counters and holds from the ledger

The service address is --addr, else BUDGET_ADDR, else 127.0.0.1:50051. reconcile talks to the
stores directly and reads REDIS_URL and DATABASE_URL.
"""


def _instant(text: str) -> dt.datetime:
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
        description="Operate the LLM budget authority: spend reports and ledger reconciliation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "--addr",
        default=os.environ.get("BUDGET_ADDR", "127.0.0.1:50051"),
        help="budget service address (default: $BUDGET_ADDR or 127.0.0.1:50051)",
    )
    top.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = sub.add_parser(
        "report",
        help="spend from the ledger, per time bucket and dimension",
        description="Spend from the PostgreSQL ledger: cost, requests, tokens, blended cost per"
        " request and share of the total, per time bucket and the dimensions you group by."
        " Refunds are netted into cost.",
    )
    report.add_argument("--org", required=True)
    report.add_argument(
        "--from",
        dest="start",
        required=True,
        type=_instant,
        help="start, inclusive: 2026-11-01 (UTC midnight) or an ISO time",
    )
    report.add_argument("--to", dest="end", required=True, type=_instant, help="end, exclusive")
    report.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="day",
        help="bucket size (default day; day/week/month need whole UTC days)",
    )
    report.add_argument(
        "--group-by",
        default="",
        help="comma-separated: org, team, project, user, provider, model, tag:<name>",
    )
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")

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


def usd(nanos: int) -> str:
    """Exact dollars from nano-USD, as text (no float)."""
    return str((Decimal(nanos) / NANOS_PER_USD).quantize(Decimal("0.000000001")))


def report_rows(report: pb.SpendReport, group_by: list[str]) -> list[dict[str, Any]]:
    rows = []
    for r in report.rows:
        row: dict[str, Any] = {"bucket_start": r.bucket_start.ToJsonString()}
        row.update({key: r.group.get(key, "") for key in group_by})
        row.update(
            cost_nanos=r.cost_nanos,
            cost_usd=usd(r.cost_nanos),
            requests=r.requests,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cost_per_request_nanos=r.cost_per_request_nanos,
            share_percent=str(Decimal(r.share_basis_points) / 100),
        )
        rows.append(row)
    return rows


def totals(report: pb.SpendReport) -> dict[str, Any]:
    return {
        "total_cost_nanos": report.total_cost_nanos,
        "total_cost_usd": usd(report.total_cost_nanos),
        "total_requests": report.total_requests,
        "total_input_tokens": report.total_input_tokens,
        "total_output_tokens": report.total_output_tokens,
        "cost_per_request_nanos": report.cost_per_request_nanos,
    }


def write_report(report: pb.SpendReport, group_by: list[str], fmt: str, out: TextIO) -> None:
    rows = report_rows(report, group_by)
    if fmt == "json":
        json.dump({"rows": rows, **totals(report)}, out, indent=2)
        out.write("\n")
        return
    columns = [
        "bucket_start",
        *group_by,
        "cost_nanos",
        "cost_usd",
        "requests",
        "input_tokens",
        "output_tokens",
        "cost_per_request_nanos",
        "share_percent",
    ]
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    shown = [{k: str(v) for k, v in row.items()} for row in rows]
    widths = {c: max([len(c), *(len(row[c]) for row in shown)]) for c in columns}
    out.write("  ".join(c.ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in shown:
        out.write("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() + "\n")
    t = totals(report)
    out.write(
        f"total: ${t['total_cost_usd']} over {t['total_requests']} requests"
        f" (blended {usd(t['cost_per_request_nanos'])} per request)\n"
    )


async def run_report(args: argparse.Namespace) -> int:
    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()]
    request = pb.GetSpendReportRequest(
        org=args.org, group_by=group_by, granularity=GRANULARITIES[args.granularity]
    )
    request.start_time.FromDatetime(args.start)
    request.end_time.FromDatetime(args.end)
    async with grpc.aio.insecure_channel(args.addr) as channel:
        stub = budget_pb2_grpc.BudgetAdminServiceStub(channel)  # type: ignore[no-untyped-call]
        report = await stub.GetSpendReport(request, timeout=args.timeout)
    write_report(report, group_by, args.format, sys.stdout)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on bad usage, naming the flag
    if args.command == "reconcile":
        from budget_service import reconcile

        flags = [
            *(["--org", args.org] if args.org else []),
            *(["--rebuild"] if args.rebuild else []),
            *(["--json"] if args.json else []),
        ]
        return reconcile.run(flags)
    try:
        return asyncio.run(run_report(args))
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.code() in UNREACHABLE else EXIT_REFUSED
