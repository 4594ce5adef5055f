"""PricingService: thin RPC methods over the catalog, the cost module and the live feed."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from datetime import UTC

import structlog

from genproto.pricing.v1 import pricing_pb2 as pb
from genproto.pricing.v1 import pricing_pb2_grpc
from pricing_service import overrides
from pricing_service.catalog_repo import AmbiguousModel, CatalogRepository, UnknownModel
from pricing_service.convert import (
    discount_from_proto,
    explicit_prices_from_proto,
    from_proto,
    override_to_proto,
    to_proto,
    usage_from_proto,
)
from pricing_service.cost import cost_nanos
from pricing_service.feed import PriceFeed
from pricing_service.overrides import PriceOverride
from pricing_service.overrides_repo import OverrideRepository
from pricing_service.sources import SourceRefresher
from servicekit import validation as v
from servicekit.errors import (
    InvalidArgument,
    NotFound,
    ServiceError,
    to_grpc_status,
)
from servicekit.rpc import Context, rpc

log = structlog.get_logger(__name__)
DEFAULT_PAGE = 100
MAX_PAGE = 1000
WATCH_BATCH = 500  # versions per catalog query of a one-version-per-event stream
MAX_PRICES_PER_EVENT = 1000  # about 300 KB per event, far below gRPC's 4 MB message limit
MAX_PAGE_TOKEN = 1024  # ours encode provider/model: two values of at most 256 bytes


def _lookup_error(exc: LookupError) -> ServiceError:
    if isinstance(exc, AmbiguousModel):
        return InvalidArgument("provider", str(exc))
    return NotFound(str(exc))


def _actor(context: Context) -> str:
    """Who made a change: the `x-actor` metadata a tool sends, else the peer address."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-actor" and isinstance(value, str) and value:
            return v.check_value("x-actor", value)
    return f"peer:{context.peer()}"


def _after(token: str) -> str:
    """Where a ListModels page token says the next page starts ("" for the first page)."""
    if not token:
        return ""
    try:
        if len(token) > MAX_PAGE_TOKEN:
            raise ValueError("longer than any token this service issues")
        after = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError) as exc:  # UnicodeError is a ValueError
        raise InvalidArgument("page_token", "pass next_page_token as it was given") from exc
    if not after.isprintable():
        raise InvalidArgument("page_token", "pass next_page_token as it was given")
    return after


class PricingService(pricing_pb2_grpc.PricingServiceServicer):
    """GetPrice / ListModels / EstimateCost / UpsertPrice / RefreshCatalog / WatchPrices, and
    the per-org price overrides."""

    SERVICE = "pricing.v1.PricingService"

    def __init__(
        self,
        catalog: CatalogRepository,
        feed: PriceFeed,
        overrides: OverrideRepository,
        refresher: SourceRefresher,
    ) -> None:
        self.catalog = catalog
        self.feed = feed
        self.overrides = overrides
        self.refresher = refresher
        self._stopping = False

    def stop(self) -> None:
        """End every WatchPrices stream (at shutdown)."""
        self._stopping = True

    async def _resolve(self, model: str, provider: str) -> int:
        if not model:
            raise InvalidArgument("model", "is required (e.g. gpt-4o or openai/gpt-4o)")
        model = v.check_value("model", model)
        provider = v.check_value("provider", provider)
        try:
            model_id, _, _ = await self.catalog.resolve(model, provider)
        except (UnknownModel, AmbiguousModel) as exc:
            raise _lookup_error(exc) from exc
        return model_id

    @rpc("GetPrice")
    async def GetPrice(self, request: pb.GetPriceRequest, context: Context) -> pb.ModelPrice:
        model_id = await self._resolve(request.model, request.provider)
        at = None
        if request.HasField("at"):
            try:
                at = request.at.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError) as exc:
                raise InvalidArgument("at", f"is not a valid timestamp: {exc}") from exc
        try:
            version = await self.catalog.price_at(model_id, at)
        except UnknownModel as exc:
            raise NotFound(f"{v.shown(request.model)} had no price at that instant") from exc
        return to_proto(version)

    @rpc("ListModels")
    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        if not 0 <= request.page_size <= MAX_PAGE:
            raise InvalidArgument("page_size", f"use 1 to {MAX_PAGE} (0 means {DEFAULT_PAGE})")
        size = request.page_size or DEFAULT_PAGE
        provider = v.check_value("provider", request.provider)
        mode = v.check_value("mode", request.mode)
        after = _after(request.page_token)
        rows = await self.catalog.current_models(
            provider=provider, mode=mode, after=after, limit=size + 1
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
        org = v.require_id("org", request.org) if request.org else ""
        model_id = await self._resolve(request.model, request.provider)
        usage = usage_from_proto("usage", request.usage)
        version = await self.catalog.price_at(model_id)
        price = version.price
        override = None
        if org:
            override = overrides.most_specific(
                await self.overrides.for_org(org), price.provider, price.model
            )
        try:
            cost = cost_nanos(overrides.apply(price, override), usage, batch=request.batch)
        except ValueError as exc:  # a kind of token the (overridden) price does not sell
            raise InvalidArgument("usage", str(exc)) from exc
        return pb.EstimateCostResponse(
            cost_nanos=cost,
            price_version=version.version,
            provider=price.provider,
            model=price.model,
            override_applied=override is not None,
        )

    @rpc("UpsertPrice")
    async def UpsertPrice(self, request: pb.UpsertPriceRequest, context: Context) -> pb.ModelPrice:
        price = from_proto(request.price)
        actor = _actor(context).removeprefix("peer:")
        recorded = await self.catalog.record(price, source=f"admin:{actor}")
        if recorded is None:  # the same price again: answer the current version
            model_id, _, _ = await self.catalog.resolve(price.model, price.provider)
            recorded = await self.catalog.price_at(model_id)
        return to_proto(recorded)

    @rpc("RefreshCatalog")
    async def RefreshCatalog(
        self, request: pb.RefreshCatalogRequest, context: Context
    ) -> pb.RefreshCatalogResponse:
        results = await self.refresher.refresh()
        return pb.RefreshCatalogResponse(
            sources=[r.to_proto() for r in results],
            version=await self.catalog.latest_version(),
        )

    async def _scope(
        self, field: str, provider: str, model: str, *, must_exist: bool
    ) -> tuple[str, str]:
        """(provider, model) of an override as stored: a model as its catalog entry's names."""
        provider_field, model_field = (f"{field}.{name}" if field else name
                                       for name in ("provider", "model"))  # fmt: skip
        provider = v.check_value(provider_field, provider)
        model = v.check_value(model_field, model)
        if model:
            try:
                _, provider, model = await self.catalog.resolve(model, provider)
            except AmbiguousModel as exc:
                raise InvalidArgument(provider_field, str(exc)) from exc
            except UnknownModel as exc:
                if must_exist:
                    raise InvalidArgument(model_field, str(exc)) from exc
        elif provider and must_exist and not await self.catalog.has_provider(provider):
            raise InvalidArgument(
                provider_field, f"the catalog has no model of provider {provider!r}"
            )
        return provider, model

    @rpc("SetPriceOverride")
    async def SetPriceOverride(
        self, request: pb.SetPriceOverrideRequest, context: Context
    ) -> pb.PriceOverride:
        field = "price_override"
        message = request.price_override
        org = v.require_id(f"{field}.org", message.org)
        kind = message.WhichOneof("kind")
        if kind is None:
            raise InvalidArgument(
                field, 'set discount_percent (e.g. "15") or prices (explicit, for one model)'
            )
        if kind == "prices" and not message.model:
            raise InvalidArgument(f"{field}.model", "explicit prices are for one model: name it")
        provider, model = await self._scope(field, message.provider, message.model,
                                            must_exist=True)  # fmt: skip
        if kind == "discount_percent":
            override = PriceOverride(
                org, provider, model,
                discount_percent=discount_from_proto(f"{field}.discount_percent",
                                                     message.discount_percent),
            )  # fmt: skip
        else:
            prices = explicit_prices_from_proto(f"{field}.prices", message.prices, provider, model)
            override = PriceOverride(org, provider, model, prices=prices)
        stored = await self.overrides.set(override, actor=_actor(context))
        log.info("pricing.override_set", org=org, provider=provider, model=model, kind=kind)
        return override_to_proto(stored)

    @rpc("DeletePriceOverride")
    async def DeletePriceOverride(
        self, request: pb.DeletePriceOverrideRequest, context: Context
    ) -> pb.DeletePriceOverrideResponse:
        org = v.require_id("org", request.org)
        provider, model = await self._scope("", request.provider, request.model,
                                            must_exist=False)  # fmt: skip
        if not await self.overrides.delete(org, provider, model):
            where = f"{provider or '*'}/{model or '*'}"
            raise NotFound(f"org {org!r} has no price override for {where}")
        log.info("pricing.override_deleted", org=org, provider=provider, model=model)
        return pb.DeletePriceOverrideResponse()

    @rpc("ListPriceOverrides")
    async def ListPriceOverrides(
        self, request: pb.ListPriceOverridesRequest, context: Context
    ) -> pb.ListPriceOverridesResponse:
        org = v.require_id("org", request.org)
        provider, model = await self._scope("", request.provider, request.model,
                                            must_exist=False)  # fmt: skip
        found = await self.overrides.for_org(org, provider=provider, model=model)
        return pb.ListPriceOverridesResponse(price_overrides=[override_to_proto(o) for o in found])

    async def WatchPrices(
        self, request: pb.WatchPricesRequest, context: Context
    ) -> AsyncIterator[pb.PriceEvent]:
        """The backlog after since_version, a caught_up marker, then live changes.

        With max_prices_per_event, each event carries up to that many versions (`prices`)
        instead of one (`price`): one event per catalog query instead of one per version.
        """
        problem = None
        if request.since_version < 0:
            problem = InvalidArgument("since_version", "must be 0 or more")
        elif request.max_prices_per_event < 0:
            problem = InvalidArgument(
                "max_prices_per_event", "must be 0 (one version per event) or more"
            )
        if problem is not None:
            await context.abort_with_status(to_grpc_status(problem))  # type: ignore[attr-defined]
        per_event = min(request.max_prices_per_event, MAX_PRICES_PER_EVENT)
        page = per_event or WATCH_BATCH
        last = request.since_version
        caught_up = False
        while not self._stopping:
            batch = await self.catalog.changes_since(last, page)
            if batch:
                last = batch[-1].version
                if per_event:
                    yield pb.PriceEvent(prices=[to_proto(version) for version in batch])
                else:
                    for version in batch:
                        yield pb.PriceEvent(price=to_proto(version))
            if len(batch) == page:
                continue
            if not caught_up:
                caught_up = True
                yield pb.PriceEvent(caught_up=True)
            await self.feed.wait(5.0)
        log.info("watch.ended", last_version=last)
