"""The Node.js client (clients/node) against the real service: what it prints, what the server has.

`node example.js` and `node test/client.test.js` run once per module, each in its own org, with
BUDGET_ADDR pointing at the in-process service; they print one JSON line per step or check, and
the tests here compare those lines with the budgets' state read through the Python admin stub.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from budget_service import server
from genproto.budget.v1 import budget_pb2 as pb
from genproto.budget.v1 import budget_pb2_grpc
from tests.helpers import status

NODE_CLIENT = Path(__file__).resolve().parents[1] / "clients" / "node"
NPM_CI_TIMEOUT_SECONDS = 300
NODE_TIMEOUT_SECONDS = 120
INT64_LIMIT = 2**60 + 1  # above 2^53: a JS number would round it to 2^60


@dataclass(frozen=True)
class NodeRun:
    """One finished node process: its org, exit code, output, and stdout's JSON lines."""

    org: str
    returncode: int
    stdout: str
    stderr: str
    lines: list[dict[str, Any]]

    def output(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def line(self, key: str, value: str) -> dict[str, Any]:
        """The JSON line whose `key` is `value` (e.g. step=commit); fails showing the output."""
        found = [line for line in self.lines if line.get(key) == value]
        assert len(found) == 1, f"expected one line with {key}={value!r}\n{self.output()}"
        return found[0]


def _npm_install_is_stale() -> bool:
    # npm ci writes node_modules/.package-lock.json last: missing or older means redo.
    marker = NODE_CLIENT / "node_modules" / ".package-lock.json"
    lock = NODE_CLIENT / "package-lock.json"
    return not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime


@pytest.fixture(scope="session")
def node_client() -> Path:
    """clients/node with its locked dependencies installed (npm ci when missing or stale)."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not on PATH: the Node client tests need Node.js 18+")
    if _npm_install_is_stale():
        # No dependency needs an install script; --ignore-scripts keeps installs inert.
        argv = ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
        try:
            done = subprocess.run(
                argv,
                cwd=NODE_CLIENT,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as timeout:
            pytest.fail(
                f"`{' '.join(argv)}` in {NODE_CLIENT} took over {NPM_CI_TIMEOUT_SECONDS} s "
                f"(is the npm registry reachable?)\n{timeout.stdout!r}\n{timeout.stderr!r}"
            )
        if done.returncode != 0:
            pytest.fail(
                f"`{' '.join(argv)}` in {NODE_CLIENT} failed with exit {done.returncode}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
    return NODE_CLIENT


async def run_node(node_client: Path, app: server.App, org: str, *args: str) -> NodeRun:
    """Run `node *args` in clients/node against `app`, in `org`, without blocking the service."""
    env = {**os.environ, "BUDGET_ADDR": f"127.0.0.1:{app.port}", "BUDGET_ORG": org}
    done = await asyncio.to_thread(
        subprocess.run,
        ["node", *args],
        cwd=node_client,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return NodeRun(org, done.returncode, done.stdout, done.stderr, lines)


def new_org(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def example(node_client: Path, app: server.App) -> NodeRun:
    return await run_node(node_client, app, new_org("node-example"), "example.js")


@pytest.fixture(scope="module")
async def node_suite(node_client: Path, app: server.App) -> NodeRun:
    # The spec report goes to stderr so stdout holds only the tests' JSON fact lines.
    reporter = ["--test-reporter=spec", "--test-reporter-destination=stderr"]
    return await run_node(node_client, app, new_org("node-suite"), *reporter, "test/client.test.js")


async def test_example_exits_zero_after_reserve_commit_and_a_refusal(example: NodeRun) -> None:
    assert example.returncode == 0, example.output()
    assert [line["step"] for line in example.lines] == [
        "upsert_budget",
        "reserve",
        "commit",
        "refused",
        "status",
    ], example.output()


async def test_example_prints_the_decoded_refusal_with_int64_strings(example: NodeRun) -> None:
    commit = example.line("step", "commit")
    assert (commit["chargedNanos"], commit["releasedNanos"]) == ("250000000", "150000000")
    refused = example.line("step", "refused")
    assert refused["code"] == "RESOURCE_EXHAUSTED"
    assert refused["reason"] == "BUDGET_EXCEEDED"
    [refusal] = refused["refusals"]
    assert refusal == {
        "budgetId": "node-example-search",
        "remainingNanos": "750000000",
        "limitNanos": "1000000000",
    }


async def test_example_commit_is_the_spend_the_server_records(
    example: NodeRun, admin: budget_pb2_grpc.BudgetAdminServiceStub
) -> None:
    printed = example.line("step", "status")
    found = await status(admin, example.org, "node-example-search")
    assert (found.spent_nanos, found.reserved_nanos, found.remaining_nanos) == (
        250_000_000,
        0,
        750_000_000,
    )
    assert printed["spentNanos"] == str(found.spent_nanos)
    assert printed["remainingNanos"] == str(found.remaining_nanos)


async def test_node_client_tests_pass_against_the_service(node_suite: NodeRun) -> None:
    assert node_suite.returncode == 0, node_suite.output()
    checks = sorted(line["check"] for line in node_suite.lines)
    assert checks == ["client_side", "commit", "int64", "invalid_argument", "refusal"], (
        node_suite.output()
    )


async def test_node_commits_are_the_spend_the_server_records(
    node_suite: NodeRun, admin: budget_pb2_grpc.BudgetAdminServiceStub
) -> None:
    fact = node_suite.line("check", "commit")
    found = await status(admin, node_suite.org, fact["budgetId"])
    # 123456789 by amount, plus the token commit the server priced (released holds cost nothing)
    assert found.spent_nanos == 123_456_789 + int(fact["tokenChargedNanos"]) > 123_456_789
    assert str(found.spent_nanos) == fact["spentNanos"]
    assert found.reserved_nanos == 0


async def test_node_refusal_reports_each_refusing_budget_as_the_server_counts_it(
    node_suite: NodeRun, admin: budget_pb2_grpc.BudgetAdminServiceStub
) -> None:
    refusals = node_suite.line("check", "refusal")["refusals"]
    assert [r["budgetId"] for r in refusals] == ["node-refusal-project", "node-refusal-user"]
    for refusal in refusals:
        found = await status(admin, node_suite.org, refusal["budgetId"])
        assert refusal["remainingNanos"] == str(found.remaining_nanos)
        assert refusal["limitNanos"] == str(found.budget.limit_nanos)
        assert found.reserved_nanos == 0, "a refused reserve held nothing"


async def test_node_invalid_argument_names_the_field_and_creates_nothing(
    node_suite: NodeRun, admin: budget_pb2_grpc.BudgetAdminServiceStub
) -> None:
    fact = node_suite.line("check", "invalid_argument")
    assert fact["fields"] == ["reservation_id", "budget.limit_nanos"]
    await assert_no_budget(admin, node_suite.org, fact["budgetId"])


async def test_node_int64_above_2_pow_53_is_exact_on_the_server(
    node_suite: NodeRun, admin: budget_pb2_grpc.BudgetAdminServiceStub
) -> None:
    fact = node_suite.line("check", "int64")
    found = await status(admin, node_suite.org, fact["budgetId"])
    assert found.budget.limit_nanos == INT64_LIMIT
    assert found.remaining_nanos == INT64_LIMIT - 123_456_789
    assert (fact["limitNanos"], fact["remainingNanos"]) == (
        str(INT64_LIMIT),
        str(INT64_LIMIT - 123_456_789),
    )


async def test_node_refuses_lossy_numbers_before_sending_them(
    node_suite: NodeRun, admin: budget_pb2_grpc.BudgetAdminServiceStub
) -> None:
    fact = node_suite.line("check", "client_side")
    await assert_no_budget(admin, node_suite.org, fact["budgetId"])


async def assert_no_budget(
    admin: budget_pb2_grpc.BudgetAdminServiceStub, org: str, budget_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.GetBudget(pb.GetBudgetRequest(org=org, budget_id=budget_id))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
