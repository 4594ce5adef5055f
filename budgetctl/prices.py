"""`budgetctl prices ...`: look up a price, import a LiteLLM-format file, refresh the sources."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from budgetctl.output import EXIT_OK, UsageError, as_dict, pricing_stub, print_fields, print_json
from genproto.pricing.v1 import pricing_pb2 as ppb
from pricing_service.convert import price_to_proto
from pricing_service.litellm_source import load_litellm_text

PRICE_FIELDS = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "request_fee",
    "batch_input",
    "batch_output",
)


def add_parsers(sub: Any, instant: Any) -> None:
    prices = sub.add_parser("prices", help="show a model's price, import a price file, refresh")
    verbs = prices.add_subparsers(dest="verb", required=True, metavar="VERB")
    show = verbs.add_parser("show", help="a model's price (USD per million tokens)")
    show.add_argument("model", help="e.g. gpt-4o, openai/gpt-4o, claude-sonnet-4-5")
    show.add_argument("--provider", default="", help="when several hosts sell the model")
    show.add_argument("--at", type=instant, help="the price in effect at this instant")
    show.add_argument("--format", choices=("table", "json"), default="table")
    imp = verbs.add_parser(
        "import",
        help="import a LiteLLM-format price file (model_prices_and_context_window.json)",
        description="Read the file here, exactly (no float), and send every usable entry with"
        " UpsertPrice: an unchanged price makes no new version. Entries it cannot use are"
        " counted by reason.",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--actor", help="recorded as the source of the new versions")
    verbs.add_parser("refresh", help="pull every PRICING_SOURCE_URLS source now")


async def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    async with pricing_stub(args) as stub:
        if args.verb == "show":
            request = ppb.GetPriceRequest(model=args.model, provider=args.provider)
            if args.at is not None:
                request.at.FromDatetime(args.at)
            price = await stub.GetPrice(request, timeout=args.timeout)
            if args.format == "json":
                print_json(as_dict(price), out)
            else:
                fields: dict[str, Any] = {
                    "model": f"{price.provider}/{price.model}",
                    "version": price.version,
                    "effective_from": price.effective_from.ToJsonString(),
                }
                for name in PRICE_FIELDS:
                    value = getattr(price.prices, name)
                    if value:
                        fields[name] = value
                print_fields(fields, out)
        elif args.verb == "import":
            await _import(stub, args)
        elif args.verb == "refresh":
            answer = await stub.RefreshCatalog(ppb.RefreshCatalogRequest(), timeout=args.timeout)
            for s in answer.sources:
                print(
                    f"{s.source}: {s.outcome}, {s.models} models, {s.changed_models} changed"
                    f"{' - ' + s.message if s.message else ''}"
                )
            print(f"catalog version {answer.version}")
    return EXIT_OK


async def _import(stub: Any, args: argparse.Namespace) -> None:
    try:
        text = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from exc
    try:
        result = load_litellm_text(text)
    except ValueError as exc:
        raise UsageError(f"{args.file} is not a LiteLLM price file: {exc}") from exc
    metadata = (("x-actor", f"budgetctl:{args.actor or 'import'}"),)
    newest = 0
    for i, price in enumerate(result.models.values(), 1):
        recorded = await stub.UpsertPrice(
            ppb.UpsertPriceRequest(price=price_to_proto(price)),
            timeout=args.timeout,
            metadata=metadata,
        )
        newest = max(newest, recorded.version)
        if i % 250 == 0:
            print(f"  {i} / {len(result.models)} ...", file=sys.stderr)
    print(
        f"{len(result.models)} models sent from {args.file} (an unchanged price makes no new"
        f" version); newest version among them: {newest}"
    )
    if result.skipped:
        skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(result.skipped.items()))
        print(f"{sum(result.skipped.values())} entries skipped ({skipped})")
