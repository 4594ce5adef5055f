"""What every budgetctl command shares: exit codes, channels, money and table output."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO

import grpc
import grpc.aio
from google.protobuf import json_format
from google.protobuf.message import Message

from budget_client.money import nanos_to_usd, usd_to_nanos
from genproto.budget.v1 import budget_pb2_grpc
from genproto.pricing.v1 import pricing_pb2_grpc

EXIT_OK, EXIT_DIFFERENCES, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class UsageError(Exception):
    """A flag's value is wrong; the message names the flag (exit 2)."""


def usd(nanos: int) -> str:
    """Exact dollars from nano-USD, as text with nine decimals (no float)."""
    return format(nanos_to_usd(nanos), "f")


def nanos_from_usd(flag: str, text: str) -> int:
    """Nano-USD from a dollar amount written as text ("12.50"), exactly; `flag` names it."""
    try:
        nanos = usd_to_nanos(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc
    if nanos < 0:
        raise UsageError(f"{flag} {text!r}: use a non-negative amount")
    return nanos


@contextlib.asynccontextmanager
async def admin_stub(args: argparse.Namespace) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(args.addr) as channel:
        yield budget_pb2_grpc.BudgetAdminServiceStub(channel)  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def pricing_stub(args: argparse.Namespace) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(args.pricing_addr) as channel:
        yield pricing_pb2_grpc.PricingServiceStub(channel)  # type: ignore[no-untyped-call]


def as_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data, field names as in the protos, defaults included."""
    data: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return data


def print_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, sort_keys=False)
    out.write("\n")


def print_table(columns: Sequence[str], rows: Sequence[dict[str, Any]], out: TextIO) -> None:
    """Columns padded to their widest value; an empty result says so."""
    if not rows:
        out.write("(none)\n")
        return
    shown = [{c: _cell(row.get(c, "")) for c in columns} for row in rows]
    widths = {c: max([len(c), *(len(row[c]) for row in shown)]) for c in columns}
    out.write("  ".join(c.ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in shown:
        out.write("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() + "\n")


def print_fields(data: dict[str, Any], out: TextIO) -> None:
    """One `name: value` line per field (nested values as compact JSON)."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        out.write(f"{key.ljust(width)}  {_cell(value)}\n")


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)
