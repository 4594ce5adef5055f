"""budgetctl end to end: every admin operation against the real services, exit codes included."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from genproto.budget.v1 import budget_pb2 as pb
from tests.helpers import reserve, usd

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ctl(app, pricing_app):  # type: ignore[no-untyped-def]
    """Run budgetctl against the test services: ctl("budgets", "list", ...) -> (code, out, err)."""

    async def run(*args: str) -> tuple[int, str, str]:
        argv = [sys.executable, "-m", "budgetctl", "--addr", f"127.0.0.1:{app.port}",
                "--pricing-addr", f"127.0.0.1:{pricing_app.port}", *args]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        return done.returncode, done.stdout, done.stderr

    return run


async def test_budgets_create_list_show_status_delete(ctl, budgets, org):
    code, out, err = await ctl("budgets", "create", "--org", org, "--id", "search-daily",
                               "--limit-usd", "12.50", "--period", "day", "--selector",
                               "team=search", "--selector", "tag:env=prod", "--timezone",
                               "Europe/Paris", "--actor", "ana", "--format", "json")  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert (created["limit_nanos"], created["selector"]) == (
        str(usd("12.50")), {"team": "search", "tag:env": "prod"})  # fmt: skip
    assert created["period"] == "PERIOD_DAY" and created["timezone"] == "Europe/Paris"
    await reserve(budgets, org, usd("2.5"), team="search", tags={"env": "prod"})

    (lcode, listed, _), (scode, shown, _), (tcode, status, _) = await asyncio.gather(
        ctl("budgets", "list", "--org", org),
        ctl("budgets", "show", "--org", org, "--id", "search-daily"),
        ctl("budgets", "status", "--org", org, "--id", "search-daily", "--format", "json"),
    )
    assert lcode == scode == tcode == 0
    assert "search-daily" in listed and "12.500000000" in listed and "tag:env=prod" in listed
    assert "Europe/Paris" in shown
    assert json.loads(status)["reserved_nanos"] == str(usd("2.5"))

    code, out, _ = await ctl("budgets", "delete", "--org", org, "--id", "search-daily")
    assert code == 0 and "deleted" in out
    code, _, err = await ctl("budgets", "show", "--org", org, "--id", "search-daily")
    assert code == 3 and "NOT_FOUND" in err and "search-daily" in err


async def test_bad_values_exit_2_naming_the_flag_and_refusals_exit_3(ctl, org):
    results = await asyncio.gather(
        ctl("budgets", "create", "--org", org, "--id", "b", "--limit-usd", "1.0000000001"),
        ctl(
            "budgets", "create", "--org", org, "--id", "b", "--limit-usd", "5", "--selector", "team"
        ),
        ctl(
            "budgets",
            "create",
            "--org",
            org,
            "--id",
            "b",
            "--limit-usd",
            "5",
            "--period",
            "fortnight",
        ),
        ctl(
            "budgets",
            "create",
            "--org",
            org,
            "--id",
            "b",
            "--limit-usd",
            "5",
            "--timezone",
            "Mars/Olympus",
        ),
    )
    (c1, _, e1), (c2, _, e2), (c3, _, e3), (c4, _, e4) = results
    assert (c1, c2, c3) == (2, 2, 2)
    assert "--limit-usd" in e1 and "--selector" in e2 and "--period" in e3
    assert c4 == 3 and "budget.timezone" in e4


async def test_reservations_list_shows_live_holds_with_their_budgets(ctl, admin, budgets, org):
    await admin.UpsertBudget(pb.UpsertBudgetRequest(budget=pb.Budget(
        org=org, id="cap", limit_nanos=usd("10"), period=pb.PERIOD_NONE)))  # fmt: skip
    held = [await reserve(budgets, org, usd("0.1") * (i + 1)) for i in range(3)]
    code, out, err = await ctl("reservations", "list", "--org", org, "--format", "json")
    assert code == 0, err
    listed = json.loads(out)
    assert {r["reservation_id"] for r in listed} == {h.reservation_id for h in held}
    assert all(r["budget_ids"] == ["cap"] for r in listed)
    # The RPC pages: two of three, then the last one.
    first = await admin.ListReservations(pb.ListReservationsRequest(org=org, page_size=2))
    second = await admin.ListReservations(
        pb.ListReservationsRequest(org=org, page_size=2, page_token=first.next_page_token)
    )
    assert len(first.reservations) == 2 and len(second.reservations) == 1
    assert not second.next_page_token
    await budgets.Release(pb.ReleaseRequest(org=org, reservation_id=held[0].reservation_id))
    code, out, _ = await ctl("reservations", "list", "--org", org)
    assert code == 0 and held[0].reservation_id not in out and held[1].reservation_id in out


async def test_prices_show_import_and_refresh(ctl, tmp_path):
    model = f"ctl-test-{uuid.uuid4().hex[:8]}"
    source = tmp_path / "prices.json"
    source.write_text(json.dumps({
        model: {"litellm_provider": "openai", "mode": "chat", "max_output_tokens": 1000,
                "input_cost_per_token": 1.5e-06, "output_cost_per_token": 6e-06},
        "some-image-model": {"litellm_provider": "openai", "mode": "image_generation",
                             "output_cost_per_image": 0.04},
    }))  # fmt: skip
    code, out, err = await ctl("prices", "import", str(source), "--actor", "ana")
    assert code == 0, err
    assert "1 models sent" in out and "1 entries skipped" in out
    code, out, err = await ctl("prices", "show", model, "--format", "json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["prices"]["input"], shown["prices"]["output"]) == ("1.5", "6")
    code, out, _ = await ctl("prices", "show", "gpt-4o")
    assert code == 0 and "input" in out and "openai/gpt-4o" in out
    code, _, err = await ctl("prices", "show", "no-such-model-zz")
    assert code == 3 and "no-such-model-zz" in err
    code, out, err = await ctl("prices", "refresh")
    assert code == 0 and "catalog version" in out, err
    code, _, err = await ctl("prices", "import", str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json" in err


async def test_help_teaches_every_command(ctl):
    code, out, _ = await ctl("--help")
    assert code == 0
    for command in ("budgets", "reservations", "prices", "report", "reconcile", "exit codes"):
        assert command in out


async def test_price_overrides_set_list_delete_and_the_catalog_list(ctl, org):
    code, out, err = await ctl("prices", "override", "set", "--org", org, "--provider", "openai",
                               "--discount-percent", "15", "--actor", "ana")  # fmt: skip
    assert code == 0, err
    assert "openai/*" in out and "15" in out
    code, out, err = await ctl(
        "prices",
        "override",
        "set",
        "--org",
        org,
        "--model",
        "gpt-4o",
        "--input",
        "2",
        "--output",
        "8",
    )
    assert code == 0, err
    code, out, _ = await ctl("prices", "override", "list", "--org", org, "--format", "json")
    listed = json.loads(out)
    assert {(o.get("provider"), o.get("model")) for o in listed} == {
        ("openai", ""), ("openai", "gpt-4o")}  # fmt: skip
    code, out, _ = await ctl("prices", "override", "delete", "--org", org, "--provider", "openai")
    assert code == 0 and "deleted" in out
    code, out, _ = await ctl("prices", "override", "list", "--org", org)
    assert code == 0 and "openai/gpt-4o" in out and "openai/*" not in out
    code, _, err = await ctl("prices", "override", "set", "--org", org, "--model", "gpt-4o",
                             "--input", "2")  # fmt: skip
    assert code == 2 and "--output" in err
    code, out, _ = await ctl("prices", "list", "--provider", "anthropic")
    assert code == 0 and "anthropic/claude-sonnet-4-5" in out and "openai/" not in out
