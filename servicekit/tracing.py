"""Optional OpenTelemetry tracing: one span per RPC, joined to the caller's trace.

Off unless TRACING_EXPORTER is set:
- `otlp`: export over OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT (install the `tracing` extra:
  `pip install 'budget-authority[tracing]'`);
- `console`: print spans to stdout (for a look, not for production);
- `global`: use the tracer provider the embedding process configured itself.
A caller's W3C `traceparent` metadata makes each span a child of the caller's span.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from servicekit.errors import ConfigError, ServiceError

EXPORTERS = ("", "otlp", "console", "global")
_enabled = False


def configure(exporter: str, service_name: str) -> None:
    """Turn tracing on with `exporter` (see the module docstring); "" leaves it off."""
    global _enabled
    if exporter not in EXPORTERS:
        raise ConfigError(f"TRACING_EXPORTER={exporter!r}: use otlp, console, global or empty")
    if not exporter:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise ConfigError(
            f"TRACING_EXPORTER={exporter} needs OpenTelemetry: pip install"
            " 'budget-authority[tracing]'"
        ) from exc
    if exporter != "global":
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            try:  # only in the `tracing` extra, so looked up by name
                otlp = importlib.import_module(
                    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
                )
            except ImportError as exc:
                raise ConfigError(
                    "TRACING_EXPORTER=otlp needs the OTLP exporter: pip install"
                    " 'budget-authority[tracing]'"
                ) from exc
            provider.add_span_processor(BatchSpanProcessor(otlp.OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    _enabled = True


def span(service: str, method: str, context: Any, org: str) -> AbstractContextManager[Any]:
    """A server span for one call (a no-op context when tracing is off)."""
    if not _enabled:
        return nullcontext()
    return _span(f"{service}/{method}", context, org)


@contextmanager
def _span(name: str, context: Any, org: str) -> Iterator[Any]:
    from opentelemetry import propagate, trace

    metadata = context.invocation_metadata() or ()
    carrier = {k: v for k, v in metadata if isinstance(v, str)}
    tracer = trace.get_tracer("budget_service")
    with tracer.start_as_current_span(
        name,
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "budget.org": org},
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except ServiceError as err:
            _set_outcome(current, err.code.name)
            raise
        except Exception:
            _set_outcome(current, "INTERNAL")
            raise


def _set_outcome(current: Any, code: str) -> None:
    """Record the call's status code on its span; errors other than refusals mark it failed."""
    from opentelemetry import trace

    current.set_attribute("rpc.grpc.status_code", code)
    if code not in ("OK", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "NOT_FOUND"):
        current.set_status(trace.Status(trace.StatusCode.ERROR, code))
