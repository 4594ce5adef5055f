"""The budget service's in-process copy of the price catalog, fed by PricingService.WatchPrices.

A token-based Reserve is priced here, with no network hop. The table keeps every version it
has seen (a reservation's commit is priced with the version its reserve used). When the stream
breaks it reconnects and resumes from the last version it holds, so it catches up.

Loading is what keeps a fresh process out of service (its health stays NOT_SERVING until
`ready`), so it is made cheap: the stream sends up to PRICES_PER_EVENT versions per event
(thousands of models in a few messages), and a model's integer estimator is compiled when a
Reserve first needs it, not for every version loaded.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import grpc
import grpc.aio
import structlog

from genproto.pricing.v1 import pricing_pb2 as ppb
from genproto.pricing.v1 import pricing_pb2_grpc
from pricing_service.convert import catalog_entry
from pricing_service.fast_estimate import (
    Estimator,
    OutputLimit,
    compile_estimator,
    compile_output_limit,
)
from pricing_service.names import candidates, provider_hint
from pricing_service.prices import ModelPrice
from servicekit.errors import InvalidArgument, Unavailable

log = structlog.get_logger(__name__)
Key = tuple[str, str]  # (provider, model)
PRICES_PER_EVENT = 1000  # versions per WatchPrices event (the pricing service's cap)
# Until the first load the process is out of service: retry the stream often. Once loaded it
# keeps serving with the prices it has, and backs off up to MAX_RETRY_SECONDS.
MAX_RETRY_SECONDS = 30.0


class UnknownModel(InvalidArgument):
    """The catalog has no price for the model (a covering budget may opt in to a default)."""


@dataclass(frozen=True)
class PricedModel:
    """One price version of one model."""

    version: int
    effective_from_ms: int
    price: ModelPrice

    @cached_property
    def estimator(self) -> Estimator | None:
        """Integer reserve estimator (same answers as the Decimal one), or None when the price
        has too many decimals for it; compiled at first use."""
        return compile_estimator(self.price)

    @cached_property
    def output_limit(self) -> OutputLimit | None:
        """The estimator's inverse: the output tokens a hold pays for (None: use Decimal)."""
        return compile_output_limit(self.price)


class PriceTable:
    """Model prices by name and by version, kept current by a WatchPrices stream."""

    def __init__(self, pricing_addr: str, *, retry_seconds: float = 1.0) -> None:
        self.addr = pricing_addr
        self.retry_seconds = retry_seconds
        self.version = 0
        self.ready = asyncio.Event()
        self.events = 0  # WatchPrices events received (a fresh load of any catalog takes few)
        self.load_seconds: float | None = None  # from start() to the first caught_up
        self._versions: dict[int, PricedModel] = {}
        self._history: dict[Key, list[PricedModel]] = defaultdict(list)
        self._names: dict[str, set[Key]] = defaultdict(set)
        # (name, provider) -> (entry, ms until which it stays current): lookups on the hot path
        # skip name rules and history scans; emptied whenever a version arrives.
        self._resolved: dict[tuple[str, str], tuple[PricedModel, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def apply(self, message: ppb.ModelPrice) -> None:
        """Take one price version into the table (InvalidArgument when it is malformed)."""
        self._add(message)
        self._resolved.clear()

    def apply_all(self, messages: Iterable[ppb.ModelPrice]) -> None:
        """Take versions into the table; a malformed one is logged and skipped."""
        for message in messages:
            try:
                self._add(message)
            except InvalidArgument as exc:  # one bad entry must not stop the feed
                log.error("prices.bad_version", version=message.version, error=exc.message)
        self._resolved.clear()

    def _add(self, message: ppb.ModelPrice) -> None:
        price = catalog_entry(message)
        entry = PricedModel(message.version, message.effective_from.ToMilliseconds(), price)
        self._versions[entry.version] = entry
        key = (price.provider, price.model)
        self._history[key].append(entry)
        for name in (price.model, *price.aliases):
            self._names[name].add(key)
        self.version = max(self.version, entry.version)

    def newest_effective_from_ms(self) -> int | None:
        """When the newest price version took effect (None before the table loads)."""
        entry = self._versions.get(self.version)
        return None if entry is None else entry.effective_from_ms

    def by_version(self, version: int) -> PricedModel:
        """The price a reservation was made with."""
        entry = self._versions.get(version)
        if entry is None:
            raise Unavailable(f"price version {version} is not loaded yet; retry shortly")
        return entry

    def lookup(self, model: str, provider: str = "", *, now_ms: int | None = None) -> PricedModel:
        """The current price of `model` (aliases and name rules as the pricing service)."""
        if not self.ready.is_set():
            raise Unavailable("prices are not loaded yet (is the pricing service up?); retry")
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        hit = self._resolved.get((model, provider))
        if hit is not None and now < hit[1]:
            return hit[0]
        entry, until = self._resolve(model, provider, now)
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[(model, provider)] = (entry, until)
        return entry

    def _resolve(self, model: str, provider: str, now: int) -> tuple[PricedModel, float]:
        provider = provider or provider_hint(model) or ""
        for name in candidates(model):
            keys = {k for k in self._names.get(name, ()) if not provider or k[0] == provider}
            if not keys:
                continue
            exact = {k for k in keys if k[1] == name} or keys
            if len(exact) > 1:
                raise InvalidArgument(
                    "subject.provider",
                    f"model {model!r} is sold by {', '.join(sorted(k[0] for k in exact))};"
                    " set subject.provider",
                )
            return self._current(exact.pop(), now)
        raise UnknownModel(
            "subject.model",
            f"model {model!r} has no price; add one with PricingService/UpsertPrice (or a"
            " source in PRICING_SOURCE_URLS), give a covering budget an unknown_model_price,"
            " or reserve with amount_nanos",
        )

    def _current(self, key: Key, now: int) -> tuple[PricedModel, float]:
        """The version in effect at `now`, and until when it stays so (a scheduled change)."""
        live = [e for e in self._history[key] if e.effective_from_ms <= now]
        if not live:
            raise InvalidArgument("subject.model", f"{key[1]!r} has no price in effect yet")
        upcoming = [e.effective_from_ms for e in self._history[key] if e.effective_from_ms > now]
        until = min(upcoming, default=float("inf"))
        return max(live, key=lambda e: (e.effective_from_ms, e.version)), until

    async def _follow(self) -> None:
        started = time.monotonic()
        delay = self.retry_seconds
        failures = 0
        while True:
            try:
                # A channel of its own subchannels: with the process-wide pool, a new channel
                # inherits gRPC's reconnect backoff (1 s growing to 2 min) from the failed
                # attempts, and the table would connect seconds after the pricing service is up.
                async with grpc.aio.insecure_channel(
                    self.addr, options=[("grpc.use_local_subchannel_pool", 1)]
                ) as channel:
                    stub = pricing_pb2_grpc.PricingServiceStub(channel)  # type: ignore[no-untyped-call]
                    request = ppb.WatchPricesRequest(
                        since_version=self.version, max_prices_per_event=PRICES_PER_EVENT
                    )
                    stream = stub.WatchPrices(request)
                    async for event in stream:
                        self.events += 1
                        delay, failures = self.retry_seconds, 0  # a later break retries quickly
                        if event.HasField("price"):  # a server that does not batch
                            self.apply_all([event.price])
                        if event.prices:
                            self.apply_all(event.prices)
                        if event.caught_up and not self.ready.is_set():
                            self.load_seconds = time.monotonic() - started
                            self.ready.set()
                            log.info("prices.loaded", version=self.version,
                                     models=len(self._history), events=self.events,
                                     seconds=round(self.load_seconds, 3))  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                failures += 1
                # Before the first load every failure is retried at once-a-retry_seconds pace
                # but logged only at 1, 2, 4, 8 ... failures: a pricing service that is down
                # for an hour costs a dozen lines, not thousands.
                if self.ready.is_set() or failures & (failures - 1) == 0:
                    log.warning("prices.stream_broken", code=exc.code().name,
                                version=self.version, loaded=self.ready.is_set(),
                                failures=failures, retry_in_seconds=delay)  # fmt: skip
            await asyncio.sleep(delay)
            if self.ready.is_set():
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="price-table")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def wait_ready(self, seconds: float) -> bool:
        """True once the catalog is loaded, False after `seconds`."""
        try:
            await asyncio.wait_for(self.ready.wait(), seconds)
        except TimeoutError:
            return False
        return True
