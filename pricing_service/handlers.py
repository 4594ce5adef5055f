"""PricingService: thin RPC methods over the catalog, the cost module and the live feed."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from datetime import UTC

import structlog

from budget_service import validation as v
from budget_service.errors import (
    BudgetServiceError,
    InvalidArgument,
    NotFound,
    Unimplemented,
    to_grpc_status,
)
from budget_service.rpc import Context, rpc
from genproto.pricing.v1 import pricing_pb2 as pb
from genproto.pricing.v1 import pricing_pb2_grpc
from pricing_service.catalog_repo import AmbiguousModel, CatalogRepository, UnknownModel
from pricing_service.convert import from_proto, to_proto, usage_from_proto
from pricing_service.cost import cost_nanos
from pricing_service.feed import PriceFeed

log = structlog.get_logger(__name__)
DEFAULT_PAGE = 100
MAX_PAGE = 1000
WATCH_BATCH = 500


def _lookup_error(exc: LookupError) -> BudgetServiceError:
    if isinstance(exc, AmbiguousModel):
        return InvalidArgument("provider", str(exc))
    return NotFound(str(exc))


class PricingService(pricing_pb2_grpc.PricingServiceServicer):
    """GetPrice / ListModels / EstimateCost / UpsertPrice / WatchPrices."""

    def __init__(self, catalog: CatalogRepository, feed: PriceFeed) -> None:
        self.catalog = catalog
        self.feed = feed
        self._stopping = False

    def stop(self) -> None:
        """End every WatchPrices stream (at shutdown)."""
        self._stopping = True

    async def _resolve(self, model: str, provider: str) -> int:
        if not model:
            raise InvalidArgument("model", "is required (e.g. gpt-4o or openai/gpt-4o)")
        v.check_value("model", model)
        try:
            model_id, _, _ = await self.catalog.resolve(model, provider)
        except (UnknownModel, AmbiguousModel) as exc:
            raise _lookup_error(exc) from exc
        return model_id

    @rpc("GetPrice")
    async def GetPrice(self, request: pb.GetPriceRequest, context: Context) -> pb.ModelPrice:
        model_id = await self._resolve(request.model, request.provider)
        at = request.at.ToDatetime(tzinfo=UTC) if request.HasField("at") else None
        try:
            version = await self.catalog.price_at(model_id, at)
        except UnknownModel as exc:
            raise NotFound(f"{request.model!r} had no price at that instant") from exc
        return to_proto(version)

    @rpc("ListModels")
    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        if not 0 <= request.page_size <= MAX_PAGE:
            raise InvalidArgument("page_size", f"use 1 to {MAX_PAGE} (0 means {DEFAULT_PAGE})")
        size = request.page_size or DEFAULT_PAGE
        try:
            after = base64.urlsafe_b64decode(request.page_token.encode()).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidArgument("page_token", "pass next_page_token as it was given") from exc
        rows = await self.catalog.current_models(
            provider=request.provider, mode=request.mode, after=after, limit=size + 1
        )
        page = rows[:size]
        token = ""
        if len(rows) > size:
            last = page[-1].price
            token = base64.urlsafe_b64encode(f"{last.provider}/{last.model}".encode()).decode()
        return pb.ListModelsResponse(models=[to_proto(r) for r in page], next_page_token=token)

    @rpc("EstimateCost")
    async def EstimateCost(
        self, request: pb.EstimateCostRequest, context: Context
    ) -> pb.EstimateCostResponse:
        model_id = await self._resolve(request.model, request.provider)
        usage = usage_from_proto("usage", request.usage)
        version = await self.catalog.price_at(model_id)
        return pb.EstimateCostResponse(
            cost_nanos=cost_nanos(version.price, usage, batch=request.batch),
            price_version=version.version,
            provider=version.price.provider,
            model=version.price.model,
        )

    @rpc("UpsertPrice")
    async def UpsertPrice(self, request: pb.UpsertPriceRequest, context: Context) -> pb.ModelPrice:
        price = from_proto(request.price)
        actor = dict(context.invocation_metadata() or ()).get("x-actor") or context.peer()
        recorded = await self.catalog.record(price, source=f"admin:{actor}")
        if recorded is None:  # the same price again: answer the current version
            model_id, _, _ = await self.catalog.resolve(price.model, price.provider)
            recorded = await self.catalog.price_at(model_id)
        return to_proto(recorded)

    @rpc("RefreshCatalog")
    async def RefreshCatalog(
        self, request: pb.RefreshCatalogRequest, context: Context
    ) -> pb.RefreshCatalogResponse:
        raise Unimplemented("pulling PRICING_SOURCE_URLS is not wired into the service yet")

    async def WatchPrices(
        self, request: pb.WatchPricesRequest, context: Context
    ) -> AsyncIterator[pb.PriceEvent]:
        """The backlog after since_version, a caught_up marker, then live changes."""
        if request.since_version < 0:
            await context.abort_with_status(  # type: ignore[attr-defined]
                to_grpc_status(InvalidArgument("since_version", "must be 0 or more"))
            )
        last = request.since_version
        caught_up = False
        while not self._stopping:
            batch = await self.catalog.changes_since(last, WATCH_BATCH)
            for version in batch:
                last = version.version
                yield pb.PriceEvent(price=to_proto(version))
            if len(batch) == WATCH_BATCH:
                continue
            if not caught_up:
                caught_up = True
                yield pb.PriceEvent(caught_up=True)
            await self.feed.wait(5.0)
        log.info("watch.ended", last_version=last)
