import datetime

from genproto.budget.v1 import budget_pb2 as _budget_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriceTier(_message.Message):
    __slots__ = ("above_input_tokens", "input", "output", "cached_input", "cache_write", "cache_write_1h")
    ABOVE_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_FIELD_NUMBER: _ClassVar[int]
    above_input_tokens: int
    input: str
    output: str
    cached_input: str
    cache_write: str
    cache_write_1h: str
    def __init__(self, above_input_tokens: _Optional[int] = ..., input: _Optional[str] = ..., output: _Optional[str] = ..., cached_input: _Optional[str] = ..., cache_write: _Optional[str] = ..., cache_write_1h: _Optional[str] = ...) -> None: ...

class Prices(_message.Message):
    __slots__ = ("input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning", "request_fee", "batch_input", "batch_output", "tiers")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FEE_FIELD_NUMBER: _ClassVar[int]
    BATCH_INPUT_FIELD_NUMBER: _ClassVar[int]
    BATCH_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    input: str
    output: str
    cached_input: str
    cache_write: str
    cache_write_1h: str
    reasoning: str
    request_fee: str
    batch_input: str
    batch_output: str
    tiers: _containers.RepeatedCompositeFieldContainer[PriceTier]
    def __init__(self, input: _Optional[str] = ..., output: _Optional[str] = ..., cached_input: _Optional[str] = ..., cache_write: _Optional[str] = ..., cache_write_1h: _Optional[str] = ..., reasoning: _Optional[str] = ..., request_fee: _Optional[str] = ..., batch_input: _Optional[str] = ..., batch_output: _Optional[str] = ..., tiers: _Optional[_Iterable[_Union[PriceTier, _Mapping]]] = ...) -> None: ...

class ModelPrice(_message.Message):
    __slots__ = ("provider", "model", "aliases", "mode", "max_input_tokens", "max_output_tokens", "prices", "version", "effective_from", "source")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_FROM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    mode: str
    max_input_tokens: int
    max_output_tokens: int
    prices: Prices
    version: int
    effective_from: _timestamp_pb2.Timestamp
    source: str
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., mode: _Optional[str] = ..., max_input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., prices: _Optional[_Union[Prices, _Mapping]] = ..., version: _Optional[int] = ..., effective_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class GetPriceRequest(_message.Message):
    __slots__ = ("model", "provider", "at")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("provider", "mode", "page_size", "page_token")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    provider: str
    mode: str
    page_size: int
    page_token: str
    def __init__(self, provider: _Optional[str] = ..., mode: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EstimateCostRequest(_message.Message):
    __slots__ = ("model", "provider", "usage", "org", "batch")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    usage: _budget_pb2.Usage
    org: str
    batch: bool
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., usage: _Optional[_Union[_budget_pb2.Usage, _Mapping]] = ..., org: _Optional[str] = ..., batch: _Optional[bool] = ...) -> None: ...

class EstimateCostResponse(_message.Message):
    __slots__ = ("cost_nanos", "price_version", "provider", "model", "override_applied")
    COST_NANOS_FIELD_NUMBER: _ClassVar[int]
    PRICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_APPLIED_FIELD_NUMBER: _ClassVar[int]
    cost_nanos: int
    price_version: int
    provider: str
    model: str
    override_applied: bool
    def __init__(self, cost_nanos: _Optional[int] = ..., price_version: _Optional[int] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., override_applied: _Optional[bool] = ...) -> None: ...

class UpsertPriceRequest(_message.Message):
    __slots__ = ("price",)
    PRICE_FIELD_NUMBER: _ClassVar[int]
    price: ModelPrice
    def __init__(self, price: _Optional[_Union[ModelPrice, _Mapping]] = ...) -> None: ...

class RefreshCatalogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SourceResult(_message.Message):
    __slots__ = ("source", "outcome", "models", "changed_models", "skipped", "message")
    class SkippedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_MODELS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    source: str
    outcome: str
    models: int
    changed_models: int
    skipped: _containers.ScalarMap[str, int]
    message: str
    def __init__(self, source: _Optional[str] = ..., outcome: _Optional[str] = ..., models: _Optional[int] = ..., changed_models: _Optional[int] = ..., skipped: _Optional[_Mapping[str, int]] = ..., message: _Optional[str] = ...) -> None: ...

class RefreshCatalogResponse(_message.Message):
    __slots__ = ("sources", "version")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[SourceResult]
    version: int
    def __init__(self, sources: _Optional[_Iterable[_Union[SourceResult, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class WatchPricesRequest(_message.Message):
    __slots__ = ("since_version", "max_prices_per_event")
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICES_PER_EVENT_FIELD_NUMBER: _ClassVar[int]
    since_version: int
    max_prices_per_event: int
    def __init__(self, since_version: _Optional[int] = ..., max_prices_per_event: _Optional[int] = ...) -> None: ...

class PriceEvent(_message.Message):
    __slots__ = ("price", "caught_up", "prices")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    price: ModelPrice
    caught_up: bool
    prices: _containers.RepeatedCompositeFieldContainer[ModelPrice]
    def __init__(self, price: _Optional[_Union[ModelPrice, _Mapping]] = ..., caught_up: _Optional[bool] = ..., prices: _Optional[_Iterable[_Union[ModelPrice, _Mapping]]] = ...) -> None: ...

class PriceOverride(_message.Message):
    __slots__ = ("org", "provider", "model", "discount_percent", "prices", "updated_at", "updated_by")
    ORG_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    org: str
    provider: str
    model: str
    discount_percent: str
    prices: Prices
    updated_at: _timestamp_pb2.Timestamp
    updated_by: str
    def __init__(self, org: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., discount_percent: _Optional[str] = ..., prices: _Optional[_Union[Prices, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ...) -> None: ...

class SetPriceOverrideRequest(_message.Message):
    __slots__ = ("price_override",)
    PRICE_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    price_override: PriceOverride
    def __init__(self, price_override: _Optional[_Union[PriceOverride, _Mapping]] = ...) -> None: ...

class DeletePriceOverrideRequest(_message.Message):
    __slots__ = ("org", "provider", "model")
    ORG_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    org: str
    provider: str
    model: str
    def __init__(self, org: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class DeletePriceOverrideResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPriceOverridesRequest(_message.Message):
    __slots__ = ("org", "provider", "model")
    ORG_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    org: str
    provider: str
    model: str
    def __init__(self, org: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ListPriceOverridesResponse(_message.Message):
    __slots__ = ("price_overrides",)
    PRICE_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    price_overrides: _containers.RepeatedCompositeFieldContainer[PriceOverride]
    def __init__(self, price_overrides: _Optional[_Iterable[_Union[PriceOverride, _Mapping]]] = ...) -> None: ...
