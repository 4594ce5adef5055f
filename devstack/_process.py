"""Shared plumbing for supervising one local server process (Redis, PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

_LOG_TAIL_BYTES = 4000
_POLL_INTERVAL = 0.02


def log_tail(path: Path, offset: int = 0, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    """Return the end of a log file, starting no earlier than `offset`."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(offset, size - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return data.decode("utf-8", errors="replace").rstrip() or "<log is empty>"


def file_size(path: Path) -> int:
    """Size of `path` in bytes, 0 if it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def pid_alive(pid: int) -> bool:
    """True if `pid` is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        # No /proc (not Linux): fall back to signal 0, which cannot tell zombies apart.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # Orphans whose reaper never calls wait() (a container whose PID 1 is not an init) stay
    # zombies forever; they hold no resources, so count them as dead.
    return stat.rpartition(")")[2].split()[0] != "Z"


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (empty if /proc is unavailable)."""
    children: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry))
    return children


class ServerProcess:
    """Base class: one server child process, its log file and its lifecycle."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int, host: str) -> None:
        # Absolute, because the server runs with its cwd set to the data dir.
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout, stderr and log output."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """Connection URL for clients."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """Pid of the running server, None when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and block until it accepts clients."""
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down cleanly; SIGKILL it if it does not exit within `timeout`."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._proc = None
        self._after_exit()

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash); the data dir is left as a crash leaves it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None
        self._after_exit()

    def _after_exit(self) -> None:
        """Hook run once the server process has exited."""

    def _spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        user: int | None = None,
        group: int | None = None,
        extra_groups: list[int] | None = None,
    ) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._log_offset = file_size(self.log_path)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                user=user,
                group=group,
                extra_groups=extra_groups,
                **self._popen_options(),
            )

    def _popen_options(self) -> dict[str, Any]:
        """Extra subprocess.Popen arguments; subclasses add session or parent-death handling."""
        return {}

    def _wait_ready(self, deadline: float) -> None:
        """Poll `_is_ready` until it holds, the process dies, or `deadline` passes."""
        proc = self._proc
        assert proc is not None
        while True:
            code = proc.poll()
            if code is not None:
                self._fail(f"{self.name} exited with code {code} during startup")
            if self._is_ready():
                return
            if time.monotonic() >= deadline:
                self._fail(f"{self.name} did not become ready in time")
            time.sleep(_POLL_INTERVAL)

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _fail(self, message: str) -> NoReturn:
        """Kill a half-started server and raise with the tail of its log."""
        self.kill()
        tail = log_tail(self.log_path, self._log_offset)
        raise RuntimeError(
            f"{message} (port {self.port}, data dir {self.data_dir})\n"
            f"--- tail of {self.log_path} ---\n{tail}"
        )

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"{type(self).__name__}({str(self.data_dir)!r}, port={self.port}, {state})"
