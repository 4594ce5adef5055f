"""`budgetctl prices ...`: look up a price, import a LiteLLM-format file, refresh the sources."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from budgetctl.output import (
    EXIT_OK,
    UsageError,
    as_dict,
    pricing_stub,
    print_fields,
    print_json,
    print_table,
)
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
    listing = verbs.add_parser("list", help="the catalog's models (current prices)")
    listing.add_argument("--provider", default="")
    listing.add_argument("--format", choices=("table", "json"), default="table")

    override = verbs.add_parser(
        "override",
        help="an org's negotiated prices: set, list, delete",
        description="Per-org price overrides: a discount in percent (org-wide, per provider or"
        " per model) or explicit prices for one model. The most specific one applies.",
    )
    overbs = override.add_subparsers(dest="override_verb", required=True, metavar="VERB")
    oset = overbs.add_parser("set", help="set a discount or explicit prices")
    oset.add_argument("--org", required=True)
    oset.add_argument("--provider", default="", help="empty: every provider")
    oset.add_argument("--model", default="", help="empty: every model of the provider")
    kind = oset.add_mutually_exclusive_group(required=True)
    kind.add_argument("--discount-percent", help='e.g. 12.5 (a decimal, "0" to "100")')
    kind.add_argument("--input", help="explicit USD per million input tokens (needs --output)")
    oset.add_argument("--output", help="explicit USD per million output tokens")
    oset.add_argument("--cached-input", default="", help="explicit cached-input price")
    oset.add_argument("--actor", help="recorded with the override")
    olist = overbs.add_parser("list", help="an org's overrides")
    olist.add_argument("--org", required=True)
    olist.add_argument("--format", choices=("table", "json"), default="table")
    odel = overbs.add_parser("delete", help="remove one override")
    odel.add_argument("--org", required=True)
    odel.add_argument("--provider", default="")
    odel.add_argument("--model", default="")
    odel.add_argument("--actor", help="recorded in the audit trail")


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
        elif args.verb == "list":
            models, token = [], ""
            for _ in range(1_000):  # pages of 1000, bounded
                page = await stub.ListModels(
                    ppb.ListModelsRequest(provider=args.provider, page_size=1000, page_token=token),
                    timeout=args.timeout,
                )
                models += list(page.models)
                token = page.next_page_token
                if not token:
                    break
            if args.format == "json":
                print_json([as_dict(m) for m in models], out)
            else:
                rows = [
                    {
                        "model": f"{m.provider}/{m.model}",
                        "input": m.prices.input,
                        "output": m.prices.output,
                        "cached_input": m.prices.cached_input,
                        "version": m.version,
                    }
                    for m in models
                ]
                print_table(("model", "input", "output", "cached_input", "version"), rows, out)
        elif args.verb == "override":
            await _override(stub, args)
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


async def _override(stub: Any, args: argparse.Namespace) -> None:
    out = sys.stdout
    metadata = (("x-actor", f"budgetctl:{getattr(args, 'actor', None) or 'override'}"),)
    if args.override_verb == "set":
        override = ppb.PriceOverride(org=args.org, provider=args.provider, model=args.model)
        if args.discount_percent is not None:
            override.discount_percent = args.discount_percent
        else:
            if not args.output:
                raise UsageError("--input needs --output (explicit prices replace both)")
            override.prices.input = args.input
            override.prices.output = args.output
            override.prices.cached_input = args.cached_input
        saved = await stub.SetPriceOverride(
            ppb.SetPriceOverrideRequest(price_override=override),
            timeout=args.timeout,
            metadata=metadata,
        )
        print_fields(_override_row(saved), out)
    elif args.override_verb == "list":
        found = await stub.ListPriceOverrides(
            ppb.ListPriceOverridesRequest(org=args.org), timeout=args.timeout
        )
        if args.format == "json":
            print_json([as_dict(o) for o in found.price_overrides], out)
        else:
            rows = [_override_row(o) for o in found.price_overrides]
            print_table(("scope", "discount_percent", "input", "output", "updated_by"), rows, out)
    else:
        await stub.DeletePriceOverride(
            ppb.DeletePriceOverrideRequest(org=args.org, provider=args.provider, model=args.model),
            timeout=args.timeout,
            metadata=metadata,
        )
        print(f"deleted the override of org {args.org!r} for {_scope(args.provider, args.model)}")


def _scope(provider: str, model: str) -> str:
    return f"{provider or '*'}/{model or '*'}"


def _override_row(o: ppb.PriceOverride) -> dict[str, Any]:
    return {
        "scope": _scope(o.provider, o.model),
        "discount_percent": o.discount_percent,
        "input": o.prices.input,
        "output": o.prices.output,
        "updated_by": o.updated_by,
    }
