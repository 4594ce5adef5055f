"""Every setting of the budget service, declared once with its environment variable and default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from servicekit.errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")  # a bool setting is true when it is one of these
MIN_RECEIVE_MESSAGE_BYTES = 64 * 1024


def _env(name: str, default: Any, help: str) -> Any:
    return field(default=default, metadata={"env": name, "help": help})


@dataclass(frozen=True)
class Settings:
    """The service's configuration; `Settings.from_env()` reads it from the environment."""

    budget_addr: str = _env("BUDGET_ADDR", "127.0.0.1:50051", "gRPC listen address")
    pricing_addr: str = _env("PRICING_ADDR", "127.0.0.1:50052", "pricing service gRPC address")
    pricing_source_urls: str = _env(
        "PRICING_SOURCE_URLS", "", "comma-separated price sources (LiteLLM JSON): URLs or files"
    )
    pricing_refresh_seconds: float = _env(
        "PRICING_REFRESH_SECONDS", 3600.0, "how often price sources are pulled"
    )
    reuse_port: bool = _env(
        "BUDGET_REUSE_PORT", False, "share BUDGET_ADDR with other processes (SO_REUSEPORT)"
    )
    redis_url: str = _env("REDIS_URL", "", "redis://host:port/db (required by the service)")
    database_url: str = _env("DATABASE_URL", "", "postgresql://... (required by the service)")
    data_dir: Path = _env("BUDGET_DATA_DIR", Path(".data"), "where `make run` keeps its data")
    log_level: str = _env("LOG_LEVEL", "info", "debug, info, warning or error")
    log_format: str = _env("LOG_FORMAT", "json", "json (one object a line) or console")
    default_ttl_seconds: float = _env("DEFAULT_TTL_SECONDS", 300.0, "hold TTL when none is given")
    min_ttl_seconds: float = _env("MIN_TTL_SECONDS", 1.0, "shortest TTL a caller may ask for")
    max_ttl_seconds: float = _env("MAX_TTL_SECONDS", 21600.0, "longest TTL a caller may ask for")
    retention_seconds: float = _env(
        "IDEMPOTENCY_RETENTION_SECONDS", 90000.0, "how long an ended reservation answers retries"
    )
    max_amount_nanos: int = _env(
        "MAX_AMOUNT_NANOS", 1_000_000 * 10**9, "largest amount one request may hold or charge"
    )
    sweep_interval_seconds: float = _env(
        "SWEEP_INTERVAL_SECONDS", 1.0, "how often expired holds are released"
    )
    config_reconcile_seconds: float = _env(
        "CONFIG_RECONCILE_SECONDS", 60.0, "how often Redis config is re-checked against PostgreSQL"
    )
    redis_timeout_seconds: float = _env(
        "REDIS_TIMEOUT_SECONDS", 0.5, "connect and command timeout; past it calls fail closed"
    )
    redis_pool_size: int = _env("REDIS_POOL_SIZE", 128, "connections to Redis per process")
    database_pool_size: int = _env(
        "DATABASE_POOL_SIZE", 10, "connections to PostgreSQL per process (at least 2)"
    )
    ledger_writer: bool = _env(
        "LEDGER_WRITER", True, "drain the ledger outbox into PostgreSQL in this process"
    )
    ledger_poll_seconds: float = _env(
        "LEDGER_POLL_SECONDS", 0.1, "how often the ledger writer looks for new events"
    )
    ledger_batch_size: int = _env("LEDGER_BATCH_SIZE", 1000, "events per PostgreSQL transaction")
    ledger_claim_idle_seconds: float = _env(
        "LEDGER_CLAIM_IDLE_SECONDS", 30.0, "a dead writer's unacknowledged events are taken after"
    )
    ledger_reconcile_seconds: float = _env(
        "LEDGER_RECONCILE_SECONDS", 300.0, "how often Redis counters are compared with the ledger"
    )
    ledger_outbox_limit: int = _env(
        "LEDGER_OUTBOX_LIMIT",
        500_000,
        "events an org's outbox may hold unwritten before its new Reserves answer UNAVAILABLE",
    )
    auto_rebuild: bool = _env(
        "AUTO_REBUILD",
        True,
        "rebuild an org from the ledger when Redis lost its data (false: an operator does it)",
    )
    ledger_retention_days: int = _env(
        "LEDGER_RETENTION_DAYS", 0,
        "delete ledger events, effects and usage records older than this (days; 0: keep all)",
    )  # fmt: skip
    ledger_rollup_retention_days: int = _env(
        "LEDGER_ROLLUP_RETENTION_DAYS", 0,
        "delete daily spend rollups older than this (days; 0: keep all)",
    )  # fmt: skip
    ledger_retention_interval_seconds: float = _env(
        "LEDGER_RETENTION_INTERVAL_SECONDS", 3600.0,
        "how often the ledger retention job runs (when a retention is set)",
    )  # fmt: skip
    metrics_addr: str = _env(
        "METRICS_ADDR", "127.0.0.1:9464", "Prometheus /metrics host:port (empty: no metrics)"
    )
    tracing_exporter: str = _env(
        "TRACING_EXPORTER", "", "OpenTelemetry spans per RPC: otlp, console, global (empty: off)"
    )
    shutdown_grace_seconds: float = _env(
        "SHUTDOWN_GRACE_SECONDS", 10.0, "how long in-flight calls may finish on shutdown"
    )
    max_usage_json_bytes: int = _env(
        "MAX_USAGE_JSON_BYTES", 65536, "largest provider_usage_json a Commit may send (UTF-8 bytes)"
    )
    grpc_max_receive_message_bytes: int = _env(
        "GRPC_MAX_RECEIVE_MESSAGE_BYTES",
        4 * 1024 * 1024,
        "largest request a server reads; a larger one is refused with RESOURCE_EXHAUSTED",
    )
    grpc_max_send_message_bytes: int = _env(
        "GRPC_MAX_SEND_MESSAGE_BYTES", 16 * 1024 * 1024, "largest response a server sends"
    )
    grpc_max_concurrent_streams: int = _env(
        "GRPC_MAX_CONCURRENT_STREAMS", 1000, "calls in flight per client connection; more wait"
    )
    grpc_max_connection_age_seconds: float = _env(
        "GRPC_MAX_CONNECTION_AGE_SECONDS",
        1800.0,
        "clients are asked to reconnect after this, so load spreads to new replicas (0: never)",
    )
    grpc_max_connection_age_grace_seconds: float = _env(
        "GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS",
        30.0,
        "calls still running on an aged connection may finish for this long",
    )
    grpc_keepalive_seconds: float = _env(
        "GRPC_KEEPALIVE_SECONDS", 60.0, "how often a server pings a client to find dead peers"
    )
    grpc_keepalive_timeout_seconds: float = _env(
        "GRPC_KEEPALIVE_TIMEOUT_SECONDS",
        20.0,
        "a peer that does not answer a ping in this is dropped",
    )
    grpc_min_client_ping_seconds: float = _env(
        "GRPC_MIN_CLIENT_PING_SECONDS",
        10.0,
        "shortest client keepalive interval accepted; pinging more often is cut off",
    )

    def __post_init__(self) -> None:
        if not 0 < self.max_amount_nanos < 2**53:
            # The scripts do a reservation's own arithmetic (charged - refunded) in Lua doubles.
            raise ConfigError(f"MAX_AMOUNT_NANOS must be between 1 and {2**53 - 1}")
        if not 0 < self.min_ttl_seconds <= self.default_ttl_seconds <= self.max_ttl_seconds:
            raise ConfigError(
                "TTL settings must satisfy 0 < MIN_TTL_SECONDS <= DEFAULT_TTL_SECONDS"
                " <= MAX_TTL_SECONDS"
            )
        for name in ("sweep_interval_seconds", "config_reconcile_seconds",
                     "redis_timeout_seconds", "ledger_poll_seconds", "ledger_batch_size",
                     "ledger_claim_idle_seconds", "ledger_reconcile_seconds",
                     "ledger_outbox_limit", "ledger_retention_interval_seconds"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()} must be greater than 0")
        for name in ("grpc_max_send_message_bytes", "grpc_max_concurrent_streams",
                     "grpc_max_connection_age_grace_seconds", "grpc_keepalive_seconds",
                     "grpc_keepalive_timeout_seconds", "grpc_min_client_ping_seconds"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()} must be greater than 0")
        if self.database_pool_size < 2:
            # a rebuild holds one connection while the ledger writer needs another
            raise ConfigError("DATABASE_POOL_SIZE must be at least 2")
        if self.grpc_max_connection_age_seconds < 0:
            raise ConfigError("GRPC_MAX_CONNECTION_AGE_SECONDS must be 0 (never) or more")
        if self.grpc_max_receive_message_bytes < MIN_RECEIVE_MESSAGE_BYTES:
            # Below this a valid request (a budget with 16 tags, a usage object) could be refused.
            raise ConfigError(
                f"GRPC_MAX_RECEIVE_MESSAGE_BYTES must be at least {MIN_RECEIVE_MESSAGE_BYTES}"
            )
        if not 0 < self.max_usage_json_bytes < self.grpc_max_receive_message_bytes:
            raise ConfigError(
                "MAX_USAGE_JSON_BYTES must be greater than 0 and below"
                " GRPC_MAX_RECEIVE_MESSAGE_BYTES"
            )
        for name in ("ledger_retention_days", "ledger_rollup_retention_days"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.upper()} must be 0 (keep everything) or a number of days")
        if self.log_format not in ("json", "console"):
            raise ConfigError(f"LOG_FORMAT={self.log_format!r}: use json or console")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from `environ` (default os.environ); keyword overrides win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if f.name in overrides:
                values[f.name] = overrides[f.name]
            elif name in env and env[name] != "":
                values[f.name] = _parse(name, env[name], type(f.default))
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, help) of every setting, for --help and the README."""
        return [(f.metadata["env"], str(f.default), f.metadata["help"]) for f in fields(cls)]


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            return raw.lower() in TRUE_WORDS
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc
