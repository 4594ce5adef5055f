"""What the bench reads from /proc: CPU time of processes and threads, and who owns a socket.

Linux only (the bench is); every reader returns empty or zero values where /proc is missing,
so a figure is lost rather than the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

TCP_LISTEN = "0A"
TCP_ESTABLISHED = "01"


def _stat_fields(path: Path) -> list[str]:
    """Fields of a /proc/.../stat file after the command name (field 3 onwards)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    return text.rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads included (0 if it is gone)."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    if len(fields) < 13:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (threads with the same name are summed)."""
    result: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tids:
        base = Path(f"/proc/{pid}/task/{tid}")
        fields = _stat_fields(base / "stat")
        if len(fields) < 13:
            continue
        try:
            name = (base / "comm").read_text().strip()
        except OSError:
            name = tid
        result[name] = result.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return result


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [pid]
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(Path(f"/proc/{entry}/stat"))
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live descendants (PostgreSQL's backends)."""
    return sum(cpu_seconds(p) for p in descendants(pid))


@dataclass(frozen=True)
class MachineCpu:
    """Jiffies of the whole machine, from the `cpu` line of /proc/stat."""

    busy: int
    total: int


def machine_cpu() -> MachineCpu:
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except (OSError, IndexError):
        return MachineCpu(0, 0)
    values = [int(v) for v in line.split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return MachineCpu(total - idle, total)


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str
    inode: int


def tcp_sockets() -> list[TcpSocket]:
    """Every IPv4 and IPv6 TCP socket of this network namespace."""
    found: list[TcpSocket] = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            found.append(TcpSocket(local_port, remote_port, parts[3], int(parts[9])))
    return found


def socket_inodes(pid: int | str = "self") -> set[int]:
    """Inodes of the sockets a process holds open."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening_on(pid: int, port: int) -> bool:
    """True when process `pid` holds a listening TCP socket on `port`."""
    mine = socket_inodes(pid)
    return any(
        s.state == TCP_LISTEN and s.local_port == port and s.inode in mine for s in tcp_sockets()
    )


def server_connections(server_pids: list[int], port: int) -> dict[int, list[int]]:
    """Server pid -> remote (client) ports of the established connections it accepted."""
    owners = {inode: pid for pid in server_pids for inode in socket_inodes(pid)}
    result: dict[int, list[int]] = {pid: [] for pid in server_pids}
    for s in tcp_sockets():
        if s.state == TCP_ESTABLISHED and s.local_port == port and s.inode in owners:
            result[owners[s.inode]].append(s.remote_port)
    return result


def runqueue_wait_seconds(pid: int) -> float:
    """Seconds the main thread of `pid` spent runnable but waiting for a CPU (schedstat)."""
    try:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    except OSError:
        return 0.0
    return int(fields[1]) / 1e9 if len(fields) > 1 else 0.0


def cpu_pressure_seconds() -> float:
    """Total seconds some task waited for a CPU (PSI `some` line), 0 without PSI."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0.0
    for part in line.split():
        if part.startswith("total="):
            return int(part[6:]) / 1e6
    return 0.0


def main_thread_run_seconds(pid: int) -> float:
    """Seconds the main thread of `pid` ran on a CPU (schedstat: nanosecond precision).

    For a service whose work is on its event-loop thread, this is the CPU its calls cost, and
    it can be read between two instants a few milliseconds apart.
    """
    try:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    except OSError:
        return 0.0
    return int(fields[0]) / 1e9 if fields else 0.0


def resident_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
