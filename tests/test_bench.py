"""Smoke test of `python -m bench`: it runs end to end and reports every figure.

No timing is asserted: the figures depend on the machine. Only that the bench starts its own
stack, drives every phase, writes its JSON with a positive number for each figure, and exits.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120.0
FIGURES = {
    "ceiling_calls_per_s",
    "budget_calls_per_s",
    "ratio_budget_to_ceiling",
    "reserve_p50_us",
    "reserve_p99_us",
    "commit_p50_us",
    "commit_p99_us",
    "half_load_calls_per_s",
    "half_load_reserve_p50_us",
    "half_load_reserve_p99_us",
    "amount_reserve_calls_per_s",
    "amount_reserve_p50_us",
    "amount_reserve_p99_us",
    "token_reserve_calls_per_s",
    "token_reserve_p50_us",
    "token_reserve_p99_us",
    "token_reserve_ratio",
    "scale_small_reserve_calls_per_s",
    "scale_large_reserve_calls_per_s",
    "scale_reserve_ratio",
    "redis_us_per_reserve_script",
    "redis_us_per_evalsha_budget_run",
    "redis_us_per_reserve_script_unloaded",
    "redis_us_per_commit_script_unloaded",
    "redis_us_per_empty_script_unloaded",
    "reserve_script_in_empty_scripts",
}


def run_bench(*args: str, module: str = "bench") -> subprocess.CompletedProcess[str]:
    """Run the bench; past the timeout, stop it with SIGTERM so it cleans up its processes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"bench still running after {TIMEOUT:.0f} s\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_bench_reports_every_figure(tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    result = run_bench(
        "--seconds", "0.5", "--clients", "1", "--concurrency", "4", "--scale-budgets", "2000",
        "--json", str(report_path),
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"

    report = json.loads(report_path.read_text())
    figures = report["figures"]
    assert set(figures) == FIGURES
    for name, value in figures.items():
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert value > 0, f"{name} = {value}"
    assert report["params"]["clients"] == 1
    assert report["params"]["concurrency_per_client"] == 4
    assert report["machine"]["cpu_count"] >= 1
    for phase in report["phases"].values():
        assert not phase["errors"], phase["errors"]
    assert "RATIO budget / ceiling" in result.stdout
    assert "RATIO tokens / amount Reserve calls/s" in result.stdout
    # Token Reserves were priced, not refused while the price table loaded (no phase has an
    # error, above), and both kinds were counted in the reserve-only phase's slices.
    counted = report["derived"]["token_reserve"]["calls_counted"]
    assert counted["amount"] > 0 and counted["tokens"] > 0, counted
    # The scale phase compared an org of 10 budgets with one of 2,000 (+ org cap and team).
    assert "RATIO 2k budgets / 10 budgets Reserve calls/s" in result.stdout
    scale = report["derived"]["scale"]
    assert scale["budgets"] == {"small": 10, "large": 2002}
    assert scale["calls_counted"]["small"] > 0 and scale["calls_counted"]["large"] > 0, scale


def test_ledger_bench_reports_writer_throughput(tmp_path: Path) -> None:
    report_path = tmp_path / "ledger.json"
    result = run_bench("--pairs", "300", "--json", str(report_path), module="bench.ledger")
    assert result.returncode == 0, result.stderr
    figures = json.loads(report_path.read_text())
    assert figures["events"] == 600
    assert figures["writer_events_per_second"] > 0 and figures["drain_seconds"] > 0
    assert "writer_events_per_second" in result.stdout
