"""Real (no mocks) tests of the devstack Redis and PostgreSQL processes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import redis

from devstack import PostgresProcess, RedisProcess, free_port

T = TypeVar("T")

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
QUERY_TIMEOUT = 5.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a private loop, leaving pytest-asyncio's session loop alone."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, QUERY_TIMEOUT * 2))
    finally:
        loop.close()


async def pg_execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=QUERY_TIMEOUT)
    try:
        for statement in statements:
            await conn.execute(statement, timeout=QUERY_TIMEOUT)
    finally:
        await conn.close(timeout=QUERY_TIMEOUT)


async def pg_fetch_values(url: str, query: str) -> list[Any]:
    conn = await asyncpg.connect(url, timeout=QUERY_TIMEOUT)
    try:
        return [row[0] for row in await conn.fetch(query, timeout=QUERY_TIMEOUT)]
    finally:
        await conn.close(timeout=QUERY_TIMEOUT)


@pytest.fixture
def cleanup() -> Iterator[ExitStack]:
    """Processes registered here are killed at teardown, even when the test failed."""
    with ExitStack() as stack:
        yield stack


def redis_client(proc: RedisProcess) -> redis.Redis:
    return redis.Redis.from_url(proc.url, socket_timeout=QUERY_TIMEOUT)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_redis_aof_survives_restart(tmp_path: Path, cleanup: ExitStack) -> None:
    proc = RedisProcess(tmp_path / "redis", free_port())
    cleanup.callback(proc.kill)
    proc.start(timeout=START_TIMEOUT)
    assert proc.url == f"redis://127.0.0.1:{proc.port}/0"
    assert proc.pid is not None
    with redis_client(proc) as client:
        assert client.set("budget:key", "42")
    proc.stop(timeout=STOP_TIMEOUT)
    assert proc.pid is None
    assert (tmp_path / "redis" / "appendonly.aof").exists()

    proc.start(timeout=START_TIMEOUT)
    with redis_client(proc) as client:
        assert client.get("budget:key") == b"42"
    proc.stop(timeout=STOP_TIMEOUT)


def test_redis_acknowledged_write_survives_kill(tmp_path: Path, cleanup: ExitStack) -> None:
    proc = RedisProcess(tmp_path / "redis", free_port(), appendfsync="always")
    cleanup.callback(proc.kill)
    with proc:
        with redis_client(proc) as client:
            client.incrby("budget:counter", 7)
        proc.kill()
        assert not proc.running
        proc.start(timeout=START_TIMEOUT)
        with redis_client(proc) as client:
            assert client.get("budget:counter") == b"7"


def test_redis_start_failure_reports_log(tmp_path: Path, cleanup: ExitStack) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        proc = RedisProcess(tmp_path / "redis", squatter.getsockname()[1])
        cleanup.callback(proc.kill)
        with pytest.raises(RuntimeError, match="Address already in use"):
            proc.start(timeout=START_TIMEOUT)
        assert not proc.running


def test_postgres_row_survives_restart(tmp_path: Path, cleanup: ExitStack) -> None:
    proc = PostgresProcess(tmp_path / "pg", free_port(), fsync=False)
    cleanup.callback(proc.kill)
    proc.start(timeout=START_TIMEOUT)
    assert proc.url == f"postgresql://postgres@127.0.0.1:{proc.port}/postgres"
    run(
        pg_execute(
            proc.url,
            "CREATE TABLE ledger (id int PRIMARY KEY, note text NOT NULL)",
            "INSERT INTO ledger VALUES (1, 'kept')",
        )
    )
    proc.stop(timeout=STOP_TIMEOUT)
    assert proc.pid is None

    proc.start(timeout=START_TIMEOUT)
    assert run(pg_fetch_values(proc.url, "SELECT note FROM ledger")) == ["kept"]
    proc.stop(timeout=STOP_TIMEOUT)


def test_postgres_recovers_after_kill(tmp_path: Path, cleanup: ExitStack) -> None:
    proc = PostgresProcess(tmp_path / "pg", free_port())
    cleanup.callback(proc.kill)
    with proc:
        run(
            pg_execute(
                proc.url,
                "CREATE TABLE ledger (id int PRIMARY KEY)",
                "INSERT INTO ledger VALUES (1)",
            )
        )
        proc.kill()
        assert not proc.running
        assert (proc.data_dir / "postmaster.pid").exists()  # left behind, as after a crash

        proc.start(timeout=START_TIMEOUT)
        assert run(pg_fetch_values(proc.url, "SELECT id FROM ledger")) == [1]
        run(pg_execute(proc.url, "INSERT INTO ledger VALUES (2)"))
    assert "automatic recovery in progress" in proc.log_path.read_text()


def test_postgres_second_server_on_same_dir_is_refused(tmp_path: Path, cleanup: ExitStack) -> None:
    first = PostgresProcess(tmp_path / "pg", free_port(), fsync=False)
    cleanup.callback(first.kill)
    first.start(timeout=START_TIMEOUT)
    second = PostgresProcess(tmp_path / "pg", free_port(), fsync=False)
    cleanup.callback(second.kill)
    with pytest.raises(RuntimeError, match="in use by a running postmaster"):
        second.start(timeout=START_TIMEOUT)
    first.stop(timeout=STOP_TIMEOUT)


def test_make_run_redis_durability_defaults_to_everysec_and_offers_always() -> None:
    from devstack.dev import DevConfig, DevstackError

    assert DevConfig.from_env({}, stdout_is_tty=False).redis_appendfsync == "everysec"
    chosen = DevConfig.from_env({"DEV_REDIS_APPENDFSYNC": "always"}, stdout_is_tty=False)
    assert chosen.redis_appendfsync == "always"
    with pytest.raises(DevstackError, match="DEV_REDIS_APPENDFSYNC='no'"):
        DevConfig.from_env({"DEV_REDIS_APPENDFSYNC": "no"}, stdout_is_tty=False)


def test_redis_runs_with_the_appendfsync_asked_for(tmp_path: Path, cleanup: ExitStack) -> None:
    for mode in ("everysec", "always"):
        proc = RedisProcess(tmp_path / mode, free_port(), appendfsync=mode)
        cleanup.callback(proc.kill)
        with proc, redis_client(proc) as client:
            config = client.config_get("append*")
            assert (config["appendonly"], config["appendfsync"]) == ("yes", mode)
