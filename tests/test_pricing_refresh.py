"""Price sources pulled at start, on RefreshCatalog and on an interval: ETag and hash skips,
new versions for changed prices only, and bad catalogs rejected with the prices kept."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import random
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from devstack import free_port
from genproto.budget.v1 import budget_pb2
from genproto.pricing.v1 import pricing_pb2 as pb
from genproto.pricing.v1 import pricing_pb2_grpc
from pricing_service import server as pricing_server
from pricing_service import sources
from tests.conftest import SHARED_DATA, Stack, service_settings
from tests.test_litellm_source import _expected_nanos, _usages

CATALOG = SHARED_DATA / "litellm_model_prices_2026-07-24.json"
HTTP_PROVIDER = "testsrc"  # names no other test uses: imports never touch their prices
FILE_PROVIDER = "testfile"
WATCHED = f"{HTTP_PROVIDER}-gpt-4o"  # the entry whose price the tests change
D = Decimal


def _subset(prefix: str, count: int) -> dict[str, Any]:
    """`count` chat entries of the real LiteLLM file, renamed under their own provider."""
    data = json.loads(CATALOG.read_text())
    out: dict[str, Any] = {}
    keys = ["gpt-4o"] + [k for k, e in data.items() if k != "gpt-4o" and isinstance(e, dict)
                         and e.get("mode") == "chat" and e.get("input_cost_per_token")]  # fmt: skip
    for key in keys[:count]:
        entry = dict(data[key])
        entry["litellm_provider"] = prefix
        out[f"{prefix}-{key.replace('/', '--')}"] = entry
    return out


class SourceServer:
    """A LiteLLM price file over HTTP on loopback, with ETags (304 on If-None-Match)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.status = 200
        self.requests: list[tuple[str | None, int]] = []  # (If-None-Match, status answered)
        self.set(document)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen = self.headers.get("If-None-Match")
                if owner.status != 200:
                    code, body = owner.status, b"upstream trouble"
                elif seen == owner.etag:
                    code, body = 304, b""
                else:
                    code, body = 200, owner.body
                owner.requests.append((seen, code))
                self.send_response(code)
                if code in (200, 304):
                    self.send_header("ETag", owner.etag)
                if code != 304:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if code != 304:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model_prices.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def set(self, document: dict[str, Any] | bytes) -> None:
        self.body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def http_source() -> Iterator[SourceServer]:
    server = SourceServer(_subset(HTTP_PROVIDER, 300))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def file_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sources") / "prices.json"
    path.write_text(json.dumps(_subset(FILE_PROVIDER, 40)))
    return path


@pytest.fixture(scope="module")
def dead_source() -> str:
    return f"http://127.0.0.1:{free_port()}/nothing-listens-here.json"


@pytest.fixture(scope="module")
async def app(
    _logging: None, stack: Stack, http_source: SourceServer, file_source: Path, dead_source: str
) -> AsyncIterator[pricing_server.PricingApp]:
    urls = f"{http_source.url}, {file_source},{dead_source}"
    running = await pricing_server.start(
        service_settings(stack, pricing_addr="127.0.0.1:0", pricing_source_urls=urls)
    )
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="module")
async def pricing(
    app: pricing_server.PricingApp,
) -> AsyncIterator[pricing_pb2_grpc.PricingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield pricing_pb2_grpc.PricingServiceStub(channel)


async def refresh(pricing: pricing_pb2_grpc.PricingServiceStub) -> dict[str, pb.SourceResult]:
    response = await pricing.RefreshCatalog(pb.RefreshCatalogRequest())
    return {r.source: r for r in response.sources}


async def watched(pricing: pricing_pb2_grpc.PricingServiceStub, **kw: Any) -> pb.ModelPrice:
    price: pb.ModelPrice = await pricing.GetPrice(
        pb.GetPriceRequest(model=WATCHED, provider=HTTP_PROVIDER, **kw)
    )
    return price


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


@pytest.fixture
def restore(http_source: SourceServer) -> Iterator[None]:
    """Put the HTTP source back as the test found it (content and health)."""
    body = http_source.body
    yield
    http_source.set(body)
    http_source.status = 200


async def test_start_pulls_every_source_and_a_dead_one_does_not_stop_it(
    app, pricing, http_source, file_source, dead_source
):
    results = {r.source: r for r in app.refresher.last_results}
    http = results[http_source.url]
    assert http.outcome == "changed" and http.models >= 250
    assert http.changed_models == http.models
    assert sum(http.skipped.values()) == 300 - http.models  # counted, not fatal
    assert results[str(file_source)].outcome == "changed"
    assert results[dead_source].outcome == "failed" and "reach" in results[dead_source].message
    price = await watched(pricing)
    assert price.source == http_source.url and price.provider == HTTP_PROVIDER
    assert D(price.prices.input) == D("2.5")  # LiteLLM's 2.5e-06 per token, exactly
    file_price = await pricing.GetPrice(
        pb.GetPriceRequest(model=f"{FILE_PROVIDER}-gpt-4o", provider=FILE_PROVIDER)
    )
    assert file_price.source == str(file_source)


async def test_estimate_cost_of_imported_models_matches_the_files_per_token_numbers(
    pricing, http_source
):
    """Through the HTTP source and the gRPC API: a few hundred models, cache and tier fields
    included, priced to the nano as the file's own per-token numbers say."""
    served = json.loads(http_source.body, parse_float=Decimal)  # the file's exact decimals
    rng = random.Random(7)
    checked = 0
    for name, entry in served.items():
        try:
            await pricing.GetPrice(pb.GetPriceRequest(model=name, provider=HTTP_PROVIDER))
        except grpc.aio.AioRpcError as exc:  # skipped at import (counted): not priced
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            continue
        for usage in _usages(rng, entry):
            wire = budget_pb2.Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cache_write_1h_tokens=usage.cache_write_1h_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            )
            answer = await pricing.EstimateCost(
                pb.EstimateCostRequest(model=name, provider=HTTP_PROVIDER, usage=wire)
            )
            assert answer.cost_nanos == _expected_nanos(entry, usage), (name, usage)
        checked += 1
    assert checked >= 250


async def test_unchanged_sources_are_skipped_by_etag_and_by_hash(pricing, http_source, file_source):
    version = (await watched(pricing)).version
    http_source.requests.clear()
    response = await pricing.RefreshCatalog(pb.RefreshCatalogRequest())
    results = {r.source: r for r in response.sources}
    assert [r.source for r in response.sources][:2] == [http_source.url, str(file_source)]
    assert results[http_source.url].outcome == "unchanged"
    assert results[http_source.url].changed_models == 0
    assert http_source.requests == [(http_source.etag, 304)]  # asked conditionally, got 304
    assert results[str(file_source)].outcome == "unchanged"
    assert "SHA-256" in results[str(file_source)].message
    assert (await watched(pricing)).version == version
    assert response.version >= version


async def test_a_price_change_is_one_new_version_and_history_stays(pricing, http_source, restore):
    before = await watched(pricing)
    stamp = _now()
    await asyncio.sleep(0.01)
    changed = json.loads(http_source.body)
    changed[WATCHED]["input_cost_per_token"] = 3e-06
    http_source.set(changed)
    results = await refresh(pricing)
    assert results[http_source.url].outcome == "changed"
    assert results[http_source.url].changed_models == 1
    after = await watched(pricing)
    assert after.version > before.version and D(after.prices.input) == D(3)
    old = await watched(pricing, at=stamp)
    assert old.version == before.version and D(old.prices.input) == D("2.5")


async def test_concurrent_refreshes_run_one_at_a_time(pricing, http_source, restore):
    changed = json.loads(http_source.body)
    changed[WATCHED]["output_cost_per_token"] = 1.2e-05
    http_source.set(changed)
    first, second = await asyncio.gather(refresh(pricing), refresh(pricing))
    outcomes = sorted(r[http_source.url].outcome for r in (first, second))
    assert outcomes == ["changed", "unchanged"]
    assert sum(r[http_source.url].changed_models for r in (first, second)) == 1
    assert D((await watched(pricing)).prices.output) == D(12)


async def _rejected(pricing, http_source, body: dict[str, Any] | bytes) -> pb.SourceResult:
    before = await watched(pricing)
    http_source.set(body)
    result = (await refresh(pricing))[http_source.url]
    assert result.outcome == "rejected", result
    after = await watched(pricing)
    assert (after.version, after.prices) == (before.version, before.prices)  # prices stayed
    return result


async def test_a_shrunken_catalog_is_rejected_and_prices_stay(pricing, http_source, restore):
    document = json.loads(http_source.body)
    kept = dict(list(document.items())[: len(document) // 3])
    result = await _rejected(pricing, http_source, kept)
    assert "lost more than half" in result.message


async def test_negative_prices_are_rejected_and_prices_stay(pricing, http_source, restore):
    document = json.loads(http_source.body)
    for entry in document.values():
        for key, value in entry.items():
            if "cost_per_token" in key and isinstance(value, float):
                entry[key] = -value
    result = await _rejected(pricing, http_source, document)
    assert "negative" in result.message
    assert result.skipped["negative_price"] > 100


async def test_invalid_json_is_rejected_and_prices_stay(pricing, http_source, restore):
    result = await _rejected(pricing, http_source, http_source.body[:-40])
    assert "not a price list" in result.message


async def test_a_failing_server_changes_nothing(pricing, http_source, restore):
    before = await watched(pricing)
    http_source.status = 500
    result = (await refresh(pricing))[http_source.url]
    assert result.outcome == "failed" and "500" in result.message
    assert (await watched(pricing)).version == before.version


async def test_a_few_bad_entries_are_counted_not_fatal(pricing, http_source, restore):
    document = json.loads(http_source.body)
    bad = [k for k in document if k != WATCHED][:2]
    for key in bad:
        document[key]["input_cost_per_token"] = -1e-06
    document[WATCHED]["input_cost_per_token"] = 4e-06
    http_source.set(document)
    result = (await refresh(pricing))[http_source.url]
    assert result.outcome == "changed" and result.changed_models == 1
    assert result.skipped["negative_price"] == 2
    assert D((await watched(pricing)).prices.input) == D(4)


async def test_a_file_source_change_is_imported(pricing, file_source):
    name = f"{FILE_PROVIDER}-gpt-4o"
    before = await pricing.GetPrice(pb.GetPriceRequest(model=name, provider=FILE_PROVIDER))
    document = json.loads(file_source.read_text())
    document[name]["output_cost_per_token"] = 2e-05
    file_source.write_text(json.dumps(document))
    result = (await refresh(pricing))[str(file_source)]
    assert result.outcome == "changed" and result.changed_models == 1
    after = await pricing.GetPrice(pb.GetPriceRequest(model=name, provider=FILE_PROVIDER))
    assert after.version > before.version and D(after.prices.output) == D(20)


async def test_an_admin_price_survives_an_unchanged_source(app, pricing, http_source):
    """A source read again re-records nothing: only a change at the source makes a version."""
    current = await watched(pricing)
    admin = pb.ModelPrice()
    admin.CopyFrom(current)
    admin.prices.input = "1.75"
    await pricing.UpsertPrice(pb.UpsertPriceRequest(price=admin))
    document = json.loads(http_source.body)
    document[f"{HTTP_PROVIDER}-unrelated"] = copy.deepcopy(document[WATCHED])
    http_source.set(document)  # new content, the watched entry as before
    result = (await refresh(pricing))[http_source.url]
    assert result.outcome == "changed" and result.changed_models == 1  # the new entry only
    assert (await watched(pricing)).prices.input == "1.75"


def test_source_list_parsing():
    assert sources.parse_source_list(" a.json, ,https://x/y.json,a.json ") == [
        "a.json",
        "https://x/y.json",
    ]
    assert sources.parse_source_list("") == []


async def test_sources_are_pulled_again_every_interval(_logging, stack, tmp_path):
    name = "testtick-gpt-4o"
    path = tmp_path / "tick.json"
    document = _subset("testtick", 5)
    path.write_text(json.dumps(document))
    settings = service_settings(stack, pricing_addr="127.0.0.1:0", pricing_source_urls=str(path),
                                pricing_refresh_seconds=0.2)  # fmt: skip
    running = await pricing_server.start(settings)
    try:
        model_id, _, _ = await running.catalog.resolve(name, "testtick")
        assert (await running.catalog.price_at(model_id)).price.input == D("2.5")
        document[name]["input_cost_per_token"] = 5e-06
        path.write_text(json.dumps(document))
        for _ in range(50):
            if (await running.catalog.price_at(model_id)).price.input == D(5):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the changed source was not pulled again")
    finally:
        await running.stop()
