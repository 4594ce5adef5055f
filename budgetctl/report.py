"""`budgetctl report`: spend from the ledger as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import sys
from decimal import Decimal
from typing import Any, TextIO

from budgetctl.output import EXIT_OK, admin_stub, print_json, print_table, usd
from genproto.budget.v1 import budget_pb2 as pb


def add_parser(sub: Any, instant: Any) -> None:
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
        type=instant,
        help="start, inclusive: 2026-11-01 (UTC midnight) or an ISO time (2026-11-24T14:20Z)",
    )
    report.add_argument("--to", dest="end", required=True, type=instant, help="end, exclusive")
    report.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="day",
        help="UTC bucket size (default day); a bucket the range covers only in part is summed"
        " exactly over the part inside the range and marked partial",
    )
    report.add_argument(
        "--group-by",
        default="",
        help="comma-separated: org, team, project, user, provider, model, tag:<name>",
    )
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")


GRANULARITIES = {
    "hour": pb.GRANULARITY_HOUR,
    "day": pb.GRANULARITY_DAY,
    "week": pb.GRANULARITY_WEEK,
    "month": pb.GRANULARITY_MONTH,
}


def report_rows(report: pb.SpendReport, group_by: list[str]) -> list[dict[str, Any]]:
    rows = []
    for r in report.rows:
        row: dict[str, Any] = {
            "bucket_start": r.bucket_start.ToJsonString(),
            "bucket_end": r.bucket_end.ToJsonString(),
            "partial": r.partial,
        }
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
        print_json({"rows": rows, **totals(report)}, out)
        return
    columns = [
        "bucket_start",
        "bucket_end",
        "partial",
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
    print_table(columns, rows, out)
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
    async with admin_stub(args) as stub:
        report = await stub.GetSpendReport(request, timeout=args.timeout)
    write_report(report, group_by, args.format, sys.stdout)
    return EXIT_OK
