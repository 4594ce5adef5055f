"""The budget service under cProfile, profiling only while the bench says so, and a summary.

`python -m bench.profiling` runs exactly the service's own entry point
(`budget_service.__main__.main`) with two signal handlers added: SIGUSR1 starts the profiler on
the event-loop thread, SIGUSR2 stops it and writes the stats to $BENCH_PROFILE_OUT. The timer
is that thread's CPU clock, so time the loop spends idle in epoll is not counted.

What it sees: the Python functions grpc's Cython server code and uvloop call, i.e. each step of
each RPC handler coroutine and everything below it. What it does not see: grpc's own C/Cython
work per call and the event loop itself (no Python frames); the ceiling phase (a handler doing
nothing) measures that part. cProfile also inflates code made of many small Python calls (such
as a client library) more than C code: read the shares as an upper bound for Python-heavy parts
and check them with `python -m bench.breakdown`, which times steps without a profiler.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import signal
import time
from pathlib import Path
from types import FrameType

# Where a function's own time goes, first match wins: (area, substrings of "file:function").
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("grpc Cython / uvloop (where visible)", ("uvloop.Loop", "cygrpc", "grpc/_cython")),
    ("grpc Python (grpc.aio wrappers)", ("grpc/",)),
    ("redis-py client (commands, pool, parser)", ("redis/", "hiredis")),
    ("json decode of script replies", ("json/", "_json", "scan_once", "scanstring")),
    ("protobuf (build, serialize, parse)", ("google/protobuf", "google._upb")),
    ("structlog / logging", ("structlog", "logging/")),
    ("asyncio (tasks, futures, locks, timeouts)", ("asyncio/",)),
    ("hashing (request fingerprint)", ("hashlib", "blake2")),
    ("periods / zoneinfo / datetime", ("periods.py", "zoneinfo", "datetime")),
    ("budget_service own code", ("budget_service/",)),
]


def _area(key: tuple[str, int, str]) -> str:
    text = f"{key[0]}:{key[2]}"
    for area, needles in AREAS:
        if any(n in text for n in needles):
            return area
    return "other (dataclasses, typing, builtins called from elsewhere ...)"


def summarize(path: Path, top: int = 25) -> str:
    """Own CPU time by area, then the functions with the most own time."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1e-9
    by_area: dict[str, float] = {}
    for key, value in entries.items():
        callers = value[4]
        if key[0] == "~" and _area(key).startswith("other") and callers:
            # A builtin (isinstance, len, str.encode ...): its time goes to its callers' areas.
            caller_tt = {c: v[2] for c, v in callers.items()}
            spread = sum(caller_tt.values()) or 1e-12
            for caller, tt in caller_tt.items():
                area = _area(caller)
                by_area[area] = by_area.get(area, 0.0) + value[2] * tt / spread
        else:
            by_area[_area(key)] = by_area.get(_area(key), 0.0) + value[2]
    lines = [
        f"Python code under the RPC handlers, event-loop thread CPU: {total:.2f} s",
        "(grpc C/Cython and the loop itself are not seen; see the ceiling phase)",
        "",
        "own CPU time by area:",
    ]
    for area, seconds in sorted(by_area.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {seconds / total:6.1%}  {seconds:7.3f} s  {area}")
    lines += ["", f"top {top} functions by own CPU time (calls, own s, cumulative s):"]
    ranked = sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]
    for (file, line, func), (_cc, nc, tt, ct, _callers) in ranked:
        where = func if file == "~" else f"{_short(file)}:{line}({func})"
        lines.append(f"  {nc:>9}  {tt:7.3f}  {ct:7.3f}  {where}")
    return "\n".join(lines)


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def run_service() -> None:
    """Run the budget service; SIGUSR1/SIGUSR2 start and stop (and write) the profile."""
    out = Path(os.environ["BENCH_PROFILE_OUT"])
    profiler = cProfile.Profile(time.thread_time_ns, 1e-9)

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        partial = out.with_suffix(".partial")
        profiler.dump_stats(str(partial))
        partial.rename(out)  # the bench waits for this name: it appears complete

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from budget_service.__main__ import main

    main()


if __name__ == "__main__":
    run_service()
