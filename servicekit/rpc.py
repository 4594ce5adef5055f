"""The wrapper every RPC method goes through: error mapping and the one log line per call."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import structlog

from servicekit import tracing
from servicekit.errors import ServiceError, to_grpc_status
from servicekit.serving import ANSWERS_UNDECODABLE, Undecodable

log = structlog.get_logger("servicekit.rpc")
# A valid org is at most 128 characters; a longer one (refused) is logged cut to this.
LOGGED_ORG_MAX = 128

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler = Callable[[Any, Req, Context], Awaitable[Resp]]


def _org(request: Any) -> str:
    """The request's org as logs and spans show it: cut short when it is absurdly long."""
    org = ""
    for path in ("org", "subject", "budget"):
        value = getattr(request, path, None)
        if isinstance(value, str):
            org = value
            break
        if value is not None and hasattr(value, "org"):
            org = str(value.org)
            break
    if len(org) > LOGGED_ORG_MAX:
        return f"{org[:LOGGED_ORG_MAX]}...({len(org)} characters)"
    return org


def rpc(method: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Log one line per call (method, org, outcome, latency) and map errors to gRPC status.

    The servicer's `metrics` (ServiceMetrics or None) counts the call under its `SERVICE`
    name; with tracing on, the call runs in a span named `<SERVICE>/<method>`. A request whose
    bytes did not decode (servicekit.serving) is answered INVALID_ARGUMENT here.
    """

    def decorate(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Req, context: Context) -> Resp:
            start = time.perf_counter()
            outcome = "OK"
            service: str = getattr(self, "SERVICE", "")
            org = _org(request)
            try:
                if isinstance(request, Undecodable):
                    raise request.error
                with tracing.span(service, method, context, org):
                    return await handler(self, request, context)
            except ServiceError as err:
                outcome = err.code.name
                await context.abort_with_status(to_grpc_status(err))  # type: ignore[attr-defined]
                raise  # unreachable: abort_with_status raises
            except Exception:
                outcome = "INTERNAL"
                log.exception("rpc.failed", method=method, org=org)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the log")
                raise
            finally:
                elapsed = time.perf_counter() - start
                metrics = getattr(self, "metrics", None)
                if metrics is not None:
                    metrics.observe_call(service, method, outcome, elapsed)
                log.info(
                    "rpc",
                    method=method,
                    org=org,
                    outcome=outcome,
                    latency_ms=round(elapsed * 1000, 3),
                )

        setattr(wrapper, ANSWERS_UNDECODABLE, True)
        return wrapper

    return decorate
