"""A lean, pipelined Redis connection for the hot path's script calls.

redis-py costs about 100 µs of CPU per command (pool, retry, per-command timeouts), several
times the cost of the script itself; the hot path is one EVALSHA per call, so this module
does only that: commands packed by hiredis, written to one connection without waiting, replies
parsed by hiredis and handed back in order (Redis answers a connection's commands in order).

Timeouts cost nothing per call: replies arrive in order, so if the oldest pending command has
waited longer than the timeout, the connection is stuck; a watchdog closes it and fails every
pending call with a timeout. A lost connection fails its pending calls the same way; the next
call reconnects. The service's scripts are idempotent by reservation id, so a caller may retry.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

from servicekit.errors import ConfigError


class WireError(Exception):
    """The connection failed or timed out: the command may or may not have run."""


class ReplyError(Exception):
    """Redis answered with an error (e.g. NOSCRIPT)."""


@dataclass(frozen=True)
class Address:
    """Where and how to connect, from a redis:// or rediss:// URL."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(f"REDIS_URL={url!r}: use redis://host:port/db or rediss://...")
        path = parts.path.lstrip("/")
        try:
            db = int(path) if path else 0
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL: database {path!r} is not a number") from exc
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
        )


class _Protocol(asyncio.Protocol):
    def __init__(self, wire: RedisWire) -> None:
        self.wire = wire
        self.reader = hiredis.Reader(encoding="utf-8", replyError=ReplyError)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.wire._pending
        while (reply := self.reader.gets()) is not False:
            future = pending.popleft()[1]
            if not future.done():
                if isinstance(reply, ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.wire._lost(self, WireError(f"connection to Redis lost: {exc or 'closed'}"))


class RedisWire:
    """One pipelined connection; `call()` sends a command and awaits its reply."""

    def __init__(self, address: Address, *, timeout_seconds: float) -> None:
        self.address = address
        self.timeout = timeout_seconds
        self._pending: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False

    async def call(self, *args: str | int | bytes) -> Any:
        """Send one command; its reply, ReplyError, or WireError (lost or timed out)."""
        if self._transport is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((time.monotonic() + self.timeout, future))
        self._out.append(hiredis.pack_command(args))  # type: ignore[arg-type]  # stubs: 1-tuple
        if not self._flush_scheduled:
            # Commands issued in the same loop iteration go out in one write.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._transport is not None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        a = self.address
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self),
                    a.host,
                    a.port,
                    ssl=ssl.create_default_context() if a.tls else None,
                ),
                self.timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise WireError(f"cannot connect to Redis at {a.host}:{a.port}: {exc}") from exc
        self._transport = transport
        self._protocol = protocol
        self._watchdog = loop.call_later(self.timeout, self._check_stuck)
        setup: list[tuple[Any, ...]] = []
        if a.password is not None:
            setup.append(("AUTH", a.username, a.password) if a.username else ("AUTH", a.password))
        if a.db:
            setup.append(("SELECT", a.db))
        for command in setup:
            try:
                await self.call(*command)
            except ReplyError as exc:
                self.close()
                raise ConfigError(f"REDIS_URL: Redis refused {command[0]}: {exc}") from exc

    def _check_stuck(self) -> None:
        if self._pending and self._pending[0][0] < time.monotonic():
            self._fail_all(WireError(f"Redis did not answer within {self.timeout:g}s"))
            self.close()
            return
        if self._transport is not None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(min(self.timeout, 0.05), self._check_stuck)

    def _lost(self, protocol: _Protocol, error: WireError) -> None:
        if protocol is self._protocol:
            self._transport = None
            self._protocol = None
            self._fail_all(error)
            self._out.clear()  # never written: must not reach a later connection

    def _fail_all(self, error: WireError) -> None:
        while self._pending:
            future = self._pending.popleft()[1]
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        """Drop the connection; pending calls fail, the next call reconnects."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport, protocol = self._transport, self._protocol
        self._transport = None
        self._protocol = None
        if protocol is not None:
            self._fail_all(WireError("connection to Redis closed"))
        self._out.clear()
        if transport is not None:
            transport.close()
