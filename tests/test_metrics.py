"""/metrics after known traffic, and OpenTelemetry spans joined to the caller's trace."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from budget_service import server
from genproto.budget.v1 import budget_pb2 as pb
from servicekit import tracing
from tests.helpers import reserve, rid, upsert, usd

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(app: server.App) -> Samples:
    assert app.metrics is not None
    url = f"http://127.0.0.1:{app.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_calls_admissions_refusals_and_utilization(
    app, budgets, admin, clock, org
):
    await upsert(admin, org, "cap", usd("1"))
    before = await asyncio.to_thread(scrape, app)
    held = await reserve(budgets, org, usd("0.40"))
    await budgets.Commit(pb.CommitRequest(org=org, reservation_id=held.reservation_id,
                                          actual_nanos=usd("0.40")))  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reserve(budgets, org, usd("0.70"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await app.utilization.refresh(app.redis, app.engine.cache, clock)
    after = await asyncio.to_thread(scrape, app)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    service = "budget.v1.BudgetService"
    assert delta("budget_rpc_calls_total", service=service, method="Reserve", code="OK") == 1
    assert delta("budget_rpc_calls_total", service=service, method="Reserve",
                 code="RESOURCE_EXHAUSTED") == 1  # fmt: skip
    assert delta("budget_rpc_calls_total", service=service, method="Commit", code="OK") == 1
    assert delta("budget_rpc_latency_seconds_count", service=service, method="Reserve") == 2
    assert value(after, "budget_reservations_total", org=org, budget="cap", outcome="admitted") == 1
    assert value(after, "budget_reservations_total", org=org, budget="cap", outcome="refused") == 1
    assert value(after, "budget_utilization_ratio", org=org, budget="cap") == pytest.approx(0.4)
    assert value(after, "budget_price_catalog_version") == app.prices.version > 0
    assert value(after, "budget_price_catalog_age_seconds") >= 0
    assert ("budget_ledger_backlog_events", frozenset()) in after


EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def _tracer_provider() -> None:
    """OpenTelemetry's global provider can be set once per process: spans go to EXPORTER."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans(_tracer_provider: None) -> Iterator[InMemorySpanExporter]:
    """Tracing on (TRACING_EXPORTER=global) for one test."""
    EXPORTER.clear()
    tracing.configure("global", "budget-service-test")
    try:
        yield EXPORTER
    finally:
        tracing._enabled = False


async def test_each_call_is_a_span_in_the_callers_trace(app, budgets, admin, org, spans):
    await upsert(admin, org, "cap", usd("1"))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await budgets.Reserve(
        pb.ReserveRequest(reservation_id=rid(), subject=pb.Subject(org=org), amount_nanos=5),
        metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),),
    )
    finished = [s for s in spans.get_finished_spans() if s.name.endswith("/Reserve")]
    assert [s.name for s in finished] == ["budget.v1.BudgetService/Reserve"]
    span = finished[0]
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    assert span.attributes["budget.org"] == org
