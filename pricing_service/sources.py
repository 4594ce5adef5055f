"""Price sources: LiteLLM price files (or the project's own format) by URL or file path.

`refresh_source` pulls one source: an http(s) URL with If-None-Match (a 304 or the same content
hash skips the import), or a local file (skipped when its SHA-256 is unchanged). The catalog is
parsed exactly, checked with `validate_catalog` against the model count that source had last
time, and, when accepted, every model whose price the source changed becomes a new version.
A rejected or failed source changes no price: the reason is logged and reported.

`SourceRefresher` pulls every source of PRICING_SOURCE_URLS, one refresh at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from genproto.pricing.v1 import pricing_pb2 as pb
from pricing_service import bundled
from pricing_service.catalog_repo import CatalogRepository, SourceState
from pricing_service.litellm_source import ImportResult, parse_litellm, validate_catalog

log = structlog.get_logger(__name__)

FETCH_TIMEOUT_SECONDS = 20.0
# LiteLLM's file is about 1.7 MB; anything far beyond is not a price list.
MAX_SOURCE_BYTES = 64 * 1024 * 1024
USER_AGENT = "budget-authority-pricing/1"

CHANGED = "changed"
UNCHANGED = "unchanged"
REJECTED = "rejected"
FAILED = "failed"


@dataclass
class SourceResult:
    """What one pull of one source did (pricing.v1.SourceResult)."""

    source: str
    outcome: str  # changed, unchanged, rejected or failed
    models: int = 0  # usable models the source carries (the last accepted count if unchanged)
    changed_models: int = 0  # new price versions this pull created
    skipped: dict[str, int] = field(default_factory=dict)  # unusable entries, by reason
    message: str = ""

    def to_proto(self) -> pb.SourceResult:
        return pb.SourceResult(
            source=self.source,
            outcome=self.outcome,
            models=self.models,
            changed_models=self.changed_models,
            skipped=self.skipped,
            message=self.message,
        )


@dataclass(frozen=True)
class Fetched:
    """A source's content, or None when the server said it has not changed (304)."""

    body: bytes | None
    etag: str | None = None


class FetchError(Exception):
    """The source could not be read (network, HTTP status, missing file, too large)."""


def parse_source_list(text: str) -> list[str]:
    """PRICING_SOURCE_URLS: comma-separated URLs or paths, blanks and repeats dropped."""
    out: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return out


def is_http(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def _file_path(source: str) -> Path:
    if source.lower().startswith("file://"):
        return Path(urllib.request.url2pathname(source[len("file://") :]))
    return Path(source).expanduser()


def _read_limited(stream: Any) -> bytes:
    body: bytes = stream.read(MAX_SOURCE_BYTES + 1)
    if len(body) > MAX_SOURCE_BYTES:
        raise FetchError(f"larger than {MAX_SOURCE_BYTES} bytes: not a price list")
    return body


def _http_get(url: str, etag: str | None, timeout: float) -> Fetched:
    """GET `url` (blocking; run in a thread), conditional on `etag`."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if etag:
        headers["If-None-Match"] = etag
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Fetched(_read_limited(response), response.headers.get("ETag"))
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(None, exc.headers.get("ETag") or etag)
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot reach it: {exc.reason}") from exc
    except (TimeoutError, OSError) as exc:
        raise FetchError(f"cannot read it: {exc}") from exc


def _read_file(source: str) -> Fetched:
    path = _file_path(source)
    try:
        with path.open("rb") as stream:
            return Fetched(_read_limited(stream))
    except OSError as exc:
        raise FetchError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc


async def fetch(
    source: str, etag: str | None, fetch_timeout_seconds: float = FETCH_TIMEOUT_SECONDS
) -> Fetched:
    """The source's content (in a thread: never blocks the event loop); FetchError if unread."""
    if is_http(source):
        return await asyncio.to_thread(_http_get, source, etag, fetch_timeout_seconds)
    return await asyncio.to_thread(_read_file, source)


def parse_text(body: bytes) -> ImportResult:
    """A LiteLLM price file, or a document in the project's own schema, as an ImportResult.

    ValueError when the text is not JSON of either shape. Numbers are read as exact decimals.
    """
    data = json.loads(body, parse_float=Decimal, parse_constant=Decimal)
    if isinstance(data, dict) and data.get("schema") == bundled.SCHEMA:
        models = bundled.parse(
            json.loads(body)  # the project's format keeps prices as strings: no float here
        )
        result = ImportResult(
            models={f"{m.provider}/{m.model}": m for m in models}, total_entries=len(models)
        )
    else:
        result = parse_litellm(data)
    result.source_sha256 = hashlib.sha256(body).hexdigest()
    return result


def _parse(body: bytes) -> ImportResult | str:
    try:
        return parse_text(body)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:  # JSONDecodeError: ValueError
        return f"not a price list: {exc}"


async def refresh_source(
    catalog: CatalogRepository,
    source: str,
    *,
    fetch_timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
) -> SourceResult:
    """Pull one source and record its changed prices; never raises for the source's faults."""
    state = await catalog.source_state(source)
    try:
        fetched = await fetch(source, state.etag if state else None, fetch_timeout_seconds)
    except FetchError as exc:
        log.warning("pricing.source_failed", source=source, error=str(exc))
        return SourceResult(source, FAILED, message=str(exc))

    if fetched.body is None:  # 304 Not Modified
        if state is None:  # no If-None-Match was sent: a broken server or proxy
            message = "HTTP 304 Not Modified to an unconditional request"
            log.warning("pricing.source_failed", source=source, error=message)
            return SourceResult(source, FAILED, message=message)
        await _touch(catalog, state, fetched.etag, state.content_sha256)
        return SourceResult(source, UNCHANGED, models=state.models,
                            message="not modified (ETag)")  # fmt: skip
    sha256 = hashlib.sha256(fetched.body).hexdigest()
    if state is not None and state.content_sha256 == sha256:
        await _touch(catalog, state, fetched.etag, sha256)
        return SourceResult(source, UNCHANGED, models=state.models,
                            message="same content (SHA-256)")  # fmt: skip

    parsed = await asyncio.to_thread(_parse, fetched.body)
    if isinstance(parsed, str):
        log.warning("pricing.source_rejected", source=source, problems=[parsed])
        return SourceResult(source, REJECTED, message=parsed)
    previous = state.models if state is not None else None
    problems = validate_catalog(parsed, previous)
    if problems:
        log.warning("pricing.source_rejected", source=source, problems=problems,
                    models=len(parsed.models), previous_models=previous)  # fmt: skip
        return SourceResult(source, REJECTED, models=len(parsed.models),
                            skipped=dict(parsed.skipped),
                            message="kept the current prices: " + "; ".join(problems))  # fmt: skip

    changed = await catalog.record_changed(parsed.models.values(), source=source)
    await catalog.save_source(source, etag=fetched.etag, content_sha256=sha256,
                              models=len(parsed.models))  # fmt: skip
    skipped_total = sum(parsed.skipped.values())
    log.info("pricing.source_imported", source=source, models=len(parsed.models),
             changed_models=changed, skipped=parsed.skipped)  # fmt: skip
    return SourceResult(
        source,
        CHANGED,
        models=len(parsed.models),
        changed_models=changed,
        skipped=dict(parsed.skipped),
        message=f"{len(parsed.models)} models, {changed} new price versions,"
        f" {skipped_total} entries skipped",
    )


async def _touch(
    catalog: CatalogRepository, state: SourceState, etag: str | None, sha256: str | None
) -> None:
    await catalog.save_source(state.source, etag=etag or state.etag, content_sha256=sha256,
                              models=state.models)  # fmt: skip


class SourceRefresher:
    """Pulls every configured source, one refresh at a time (concurrent callers queue)."""

    def __init__(
        self,
        catalog: CatalogRepository,
        sources: Sequence[str],
        *,
        fetch_timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self.catalog = catalog
        self.sources = list(sources)
        self.fetch_timeout_seconds = fetch_timeout_seconds
        self.last_results: list[SourceResult] = []
        self._lock = asyncio.Lock()

    async def refresh(self) -> list[SourceResult]:
        """Pull each source in order; one source's failure never stops the others."""
        async with self._lock:
            results = []
            for source in self.sources:
                try:
                    result = await refresh_source(
                        self.catalog, source, fetch_timeout_seconds=self.fetch_timeout_seconds
                    )
                except Exception as exc:  # e.g. PostgreSQL down: this source failed, go on
                    log.exception("pricing.source_crashed", source=source)
                    result = SourceResult(source, FAILED, message=f"{type(exc).__name__}: {exc}")
                results.append(result)
            self.last_results = results
            return results
