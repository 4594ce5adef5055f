import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]

class Period(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERIOD_UNSPECIFIED: _ClassVar[Period]
    PERIOD_NONE: _ClassVar[Period]
    PERIOD_MINUTE: _ClassVar[Period]
    PERIOD_HOUR: _ClassVar[Period]
    PERIOD_DAY: _ClassVar[Period]
    PERIOD_WEEK: _ClassVar[Period]
    PERIOD_MONTH: _ClassVar[Period]
    PERIOD_YEAR: _ClassVar[Period]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_HARD: _ClassVar[Mode]
    MODE_SOFT: _ClassVar[Mode]
    MODE_SHADOW: _ClassVar[Mode]

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    GRANULARITY_HOUR: _ClassVar[Granularity]
    GRANULARITY_DAY: _ClassVar[Granularity]
    GRANULARITY_WEEK: _ClassVar[Granularity]
    GRANULARITY_MONTH: _ClassVar[Granularity]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority
PRIORITY_CRITICAL: Priority
PERIOD_UNSPECIFIED: Period
PERIOD_NONE: Period
PERIOD_MINUTE: Period
PERIOD_HOUR: Period
PERIOD_DAY: Period
PERIOD_WEEK: Period
PERIOD_MONTH: Period
PERIOD_YEAR: Period
MODE_UNSPECIFIED: Mode
MODE_HARD: Mode
MODE_SOFT: Mode
MODE_SHADOW: Mode
GRANULARITY_UNSPECIFIED: Granularity
GRANULARITY_HOUR: Granularity
GRANULARITY_DAY: Granularity
GRANULARITY_WEEK: Granularity
GRANULARITY_MONTH: Granularity

class Subject(_message.Message):
    __slots__ = ("org", "team", "project", "user", "provider", "model", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ORG_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    org: str
    team: str
    project: str
    user: str
    provider: str
    model: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, org: _Optional[str] = ..., team: _Optional[str] = ..., project: _Optional[str] = ..., user: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "cache_write_1h_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_1H_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cache_write_1h_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., cache_write_1h_tokens: _Optional[int] = ...) -> None: ...

class BudgetBalance(_message.Message):
    __slots__ = ("budget_id", "limit_nanos", "spent_nanos", "reserved_nanos", "remaining_nanos", "mode", "exceeded", "overdraft_remaining_nanos")
    BUDGET_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NANOS_FIELD_NUMBER: _ClassVar[int]
    SPENT_NANOS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_NANOS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_NANOS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXCEEDED_FIELD_NUMBER: _ClassVar[int]
    OVERDRAFT_REMAINING_NANOS_FIELD_NUMBER: _ClassVar[int]
    budget_id: str
    limit_nanos: int
    spent_nanos: int
    reserved_nanos: int
    remaining_nanos: int
    mode: Mode
    exceeded: bool
    overdraft_remaining_nanos: int
    def __init__(self, budget_id: _Optional[str] = ..., limit_nanos: _Optional[int] = ..., spent_nanos: _Optional[int] = ..., reserved_nanos: _Optional[int] = ..., remaining_nanos: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., exceeded: _Optional[bool] = ..., overdraft_remaining_nanos: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("reservation_id", "subject", "amount_nanos", "usage", "ttl", "priority")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_NANOS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    subject: Subject
    amount_nanos: int
    usage: Usage
    ttl: _duration_pb2.Duration
    priority: Priority
    def __init__(self, reservation_id: _Optional[str] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., amount_nanos: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("reservation_id", "reserved_nanos", "expires_at", "budgets", "price_version", "unknown_model_price_used", "max_output_tokens")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_NANOS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    PRICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_MODEL_PRICE_USED_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    reserved_nanos: int
    expires_at: _timestamp_pb2.Timestamp
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetBalance]
    price_version: int
    unknown_model_price_used: bool
    max_output_tokens: int
    def __init__(self, reservation_id: _Optional[str] = ..., reserved_nanos: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., budgets: _Optional[_Iterable[_Union[BudgetBalance, _Mapping]]] = ..., price_version: _Optional[int] = ..., unknown_model_price_used: _Optional[bool] = ..., max_output_tokens: _Optional[int] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("org", "reservation_id", "actual_nanos", "usage", "provider_usage_json", "latency_ms")
    ORG_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_NANOS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_USAGE_JSON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    org: str
    reservation_id: str
    actual_nanos: int
    usage: Usage
    provider_usage_json: str
    latency_ms: int
    def __init__(self, org: _Optional[str] = ..., reservation_id: _Optional[str] = ..., actual_nanos: _Optional[int] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., provider_usage_json: _Optional[str] = ..., latency_ms: _Optional[int] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("charged_nanos", "released_nanos", "overage_nanos", "budgets", "late", "usage")
    CHARGED_NANOS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_NANOS_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_NANOS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    charged_nanos: int
    released_nanos: int
    overage_nanos: int
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetBalance]
    late: bool
    usage: Usage
    def __init__(self, charged_nanos: _Optional[int] = ..., released_nanos: _Optional[int] = ..., overage_nanos: _Optional[int] = ..., budgets: _Optional[_Iterable[_Union[BudgetBalance, _Mapping]]] = ..., late: _Optional[bool] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("org", "reservation_id")
    ORG_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    org: str
    reservation_id: str
    def __init__(self, org: _Optional[str] = ..., reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released_nanos",)
    RELEASED_NANOS_FIELD_NUMBER: _ClassVar[int]
    released_nanos: int
    def __init__(self, released_nanos: _Optional[int] = ...) -> None: ...

class RefundRequest(_message.Message):
    __slots__ = ("org", "reservation_id", "refund_id", "amount_nanos")
    ORG_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_NANOS_FIELD_NUMBER: _ClassVar[int]
    org: str
    reservation_id: str
    refund_id: str
    amount_nanos: int
    def __init__(self, org: _Optional[str] = ..., reservation_id: _Optional[str] = ..., refund_id: _Optional[str] = ..., amount_nanos: _Optional[int] = ...) -> None: ...

class RefundResponse(_message.Message):
    __slots__ = ("refunded_nanos",)
    REFUNDED_NANOS_FIELD_NUMBER: _ClassVar[int]
    refunded_nanos: int
    def __init__(self, refunded_nanos: _Optional[int] = ...) -> None: ...

class ExtendRequest(_message.Message):
    __slots__ = ("org", "reservation_id", "ttl")
    ORG_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    org: str
    reservation_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, org: _Optional[str] = ..., reservation_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExtendResponse(_message.Message):
    __slots__ = ("expires_at",)
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("id", "org", "selector", "limit_nanos", "period", "timezone", "mode", "alert_thresholds_percent", "overdraft_nanos", "version", "created_at", "updated_at", "unknown_model_price")
    class SelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NANOS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    OVERDRAFT_NANOS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_MODEL_PRICE_FIELD_NUMBER: _ClassVar[int]
    id: str
    org: str
    selector: _containers.ScalarMap[str, str]
    limit_nanos: int
    period: Period
    timezone: str
    mode: Mode
    alert_thresholds_percent: _containers.RepeatedScalarFieldContainer[int]
    overdraft_nanos: int
    version: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    unknown_model_price: UnknownModelPrice
    def __init__(self, id: _Optional[str] = ..., org: _Optional[str] = ..., selector: _Optional[_Mapping[str, str]] = ..., limit_nanos: _Optional[int] = ..., period: _Optional[_Union[Period, str]] = ..., timezone: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., alert_thresholds_percent: _Optional[_Iterable[int]] = ..., overdraft_nanos: _Optional[int] = ..., version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., unknown_model_price: _Optional[_Union[UnknownModelPrice, _Mapping]] = ...) -> None: ...

class UnknownModelPrice(_message.Message):
    __slots__ = ("input_nanos_per_million", "output_nanos_per_million")
    INPUT_NANOS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NANOS_PER_MILLION_FIELD_NUMBER: _ClassVar[int]
    input_nanos_per_million: int
    output_nanos_per_million: int
    def __init__(self, input_nanos_per_million: _Optional[int] = ..., output_nanos_per_million: _Optional[int] = ...) -> None: ...

class UpsertBudgetRequest(_message.Message):
    __slots__ = ("budget",)
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class GetBudgetRequest(_message.Message):
    __slots__ = ("org", "budget_id")
    ORG_FIELD_NUMBER: _ClassVar[int]
    BUDGET_ID_FIELD_NUMBER: _ClassVar[int]
    org: str
    budget_id: str
    def __init__(self, org: _Optional[str] = ..., budget_id: _Optional[str] = ...) -> None: ...

class ListBudgetsRequest(_message.Message):
    __slots__ = ("org", "page_size", "page_token")
    ORG_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    org: str
    page_size: int
    page_token: str
    def __init__(self, org: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBudgetsResponse(_message.Message):
    __slots__ = ("budgets", "next_page_token")
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[Budget]
    next_page_token: str
    def __init__(self, budgets: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListReservationsRequest(_message.Message):
    __slots__ = ("org", "page_size", "page_token")
    ORG_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    org: str
    page_size: int
    page_token: str
    def __init__(self, org: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("reservation_id", "reserved_nanos", "created_at", "expires_at", "budget_ids", "subject", "price_version")
    class SubjectEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_NANOS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_IDS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PRICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    reserved_nanos: int
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    budget_ids: _containers.RepeatedScalarFieldContainer[str]
    subject: _containers.ScalarMap[str, str]
    price_version: int
    def __init__(self, reservation_id: _Optional[str] = ..., reserved_nanos: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., budget_ids: _Optional[_Iterable[str]] = ..., subject: _Optional[_Mapping[str, str]] = ..., price_version: _Optional[int] = ...) -> None: ...

class ListReservationsResponse(_message.Message):
    __slots__ = ("reservations", "next_page_token")
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    reservations: _containers.RepeatedCompositeFieldContainer[Reservation]
    next_page_token: str
    def __init__(self, reservations: _Optional[_Iterable[_Union[Reservation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteBudgetRequest(_message.Message):
    __slots__ = ("org", "budget_id")
    ORG_FIELD_NUMBER: _ClassVar[int]
    BUDGET_ID_FIELD_NUMBER: _ClassVar[int]
    org: str
    budget_id: str
    def __init__(self, org: _Optional[str] = ..., budget_id: _Optional[str] = ...) -> None: ...

class DeleteBudgetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBudgetStatusRequest(_message.Message):
    __slots__ = ("org", "budget_id")
    ORG_FIELD_NUMBER: _ClassVar[int]
    BUDGET_ID_FIELD_NUMBER: _ClassVar[int]
    org: str
    budget_id: str
    def __init__(self, org: _Optional[str] = ..., budget_id: _Optional[str] = ...) -> None: ...

class BudgetStatus(_message.Message):
    __slots__ = ("budget", "spent_nanos", "reserved_nanos", "remaining_nanos", "period_start", "period_end", "utilization_percent", "alert_threshold_reached_percent", "overage_nanos", "overage_commit_count", "recent_overage_commits")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SPENT_NANOS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_NANOS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_NANOS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLD_REACHED_PERCENT_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_NANOS_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_COMMIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    RECENT_OVERAGE_COMMITS_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    spent_nanos: int
    reserved_nanos: int
    remaining_nanos: int
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    utilization_percent: int
    alert_threshold_reached_percent: int
    overage_nanos: int
    overage_commit_count: int
    recent_overage_commits: _containers.RepeatedCompositeFieldContainer[OverageCommit]
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ..., spent_nanos: _Optional[int] = ..., reserved_nanos: _Optional[int] = ..., remaining_nanos: _Optional[int] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., utilization_percent: _Optional[int] = ..., alert_threshold_reached_percent: _Optional[int] = ..., overage_nanos: _Optional[int] = ..., overage_commit_count: _Optional[int] = ..., recent_overage_commits: _Optional[_Iterable[_Union[OverageCommit, _Mapping]]] = ...) -> None: ...

class OverageCommit(_message.Message):
    __slots__ = ("reservation_id", "above_limit_nanos", "late", "above_hold")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    ABOVE_LIMIT_NANOS_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    ABOVE_HOLD_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    above_limit_nanos: int
    late: bool
    above_hold: bool
    def __init__(self, reservation_id: _Optional[str] = ..., above_limit_nanos: _Optional[int] = ..., late: _Optional[bool] = ..., above_hold: _Optional[bool] = ...) -> None: ...

class GetSpendReportRequest(_message.Message):
    __slots__ = ("org", "group_by", "start_time", "end_time", "granularity")
    ORG_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    org: str
    group_by: _containers.RepeatedScalarFieldContainer[str]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    granularity: Granularity
    def __init__(self, org: _Optional[str] = ..., group_by: _Optional[_Iterable[str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., granularity: _Optional[_Union[Granularity, str]] = ...) -> None: ...

class SpendRow(_message.Message):
    __slots__ = ("group", "bucket_start", "cost_nanos", "requests", "input_tokens", "output_tokens", "cost_per_request_nanos", "share_basis_points", "bucket_end", "partial")
    class GroupEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GROUP_FIELD_NUMBER: _ClassVar[int]
    BUCKET_START_FIELD_NUMBER: _ClassVar[int]
    COST_NANOS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_PER_REQUEST_NANOS_FIELD_NUMBER: _ClassVar[int]
    SHARE_BASIS_POINTS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_END_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    group: _containers.ScalarMap[str, str]
    bucket_start: _timestamp_pb2.Timestamp
    cost_nanos: int
    requests: int
    input_tokens: int
    output_tokens: int
    cost_per_request_nanos: int
    share_basis_points: int
    bucket_end: _timestamp_pb2.Timestamp
    partial: bool
    def __init__(self, group: _Optional[_Mapping[str, str]] = ..., bucket_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cost_nanos: _Optional[int] = ..., requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_per_request_nanos: _Optional[int] = ..., share_basis_points: _Optional[int] = ..., bucket_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., partial: _Optional[bool] = ...) -> None: ...

class SpendReport(_message.Message):
    __slots__ = ("rows", "total_cost_nanos", "total_requests", "total_input_tokens", "total_output_tokens", "cost_per_request_nanos")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_NANOS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_PER_REQUEST_NANOS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[SpendRow]
    total_cost_nanos: int
    total_requests: int
    total_input_tokens: int
    total_output_tokens: int
    cost_per_request_nanos: int
    def __init__(self, rows: _Optional[_Iterable[_Union[SpendRow, _Mapping]]] = ..., total_cost_nanos: _Optional[int] = ..., total_requests: _Optional[int] = ..., total_input_tokens: _Optional[int] = ..., total_output_tokens: _Optional[int] = ..., cost_per_request_nanos: _Optional[int] = ...) -> None: ...
