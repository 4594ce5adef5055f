"""Settings: read from the environment once; a bad value stops the start with a clear message."""

from __future__ import annotations

import pytest

from servicekit.errors import ConfigError
from servicekit.settings import Settings


def test_defaults_are_the_pinned_ones():
    s = Settings.from_env({})
    assert s.budget_addr == "127.0.0.1:50051"
    assert s.default_ttl_seconds == 300
    assert s.retention_seconds >= 24 * 3600


def test_ledger_retention_is_off_by_default_and_set_in_days():
    assert (Settings.from_env({}).ledger_retention_days,
            Settings.from_env({}).ledger_rollup_retention_days) == (0, 0)  # fmt: skip
    s = Settings.from_env({"LEDGER_RETENTION_DAYS": "400", "LEDGER_ROLLUP_RETENTION_DAYS": "1825",
                           "LEDGER_RETENTION_INTERVAL_SECONDS": "600"})  # fmt: skip
    assert (s.ledger_retention_days, s.ledger_rollup_retention_days) == (400, 1825)
    assert s.ledger_retention_interval_seconds == 600


def test_environment_overrides_defaults_with_types():
    s = Settings.from_env({"BUDGET_ADDR": "0.0.0.0:7000", "SWEEP_INTERVAL_SECONDS": "0.5",
                           "BUDGET_REUSE_PORT": "true"})  # fmt: skip
    assert (s.budget_addr, s.sweep_interval_seconds, s.reuse_port) == ("0.0.0.0:7000", 0.5, True)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SWEEP_INTERVAL_SECONDS": "often"}, "SWEEP_INTERVAL_SECONDS"),
        ({"MAX_AMOUNT_NANOS": str(2**60)}, "MAX_AMOUNT_NANOS"),
        ({"MIN_TTL_SECONDS": "600"}, "MIN_TTL_SECONDS"),
        ({"REDIS_TIMEOUT_SECONDS": "0"}, "REDIS_TIMEOUT_SECONDS"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LEDGER_RETENTION_DAYS": "-1"}, "LEDGER_RETENTION_DAYS"),
        ({"LEDGER_ROLLUP_RETENTION_DAYS": "1.5"}, "LEDGER_ROLLUP_RETENTION_DAYS"),
        ({"LEDGER_RETENTION_INTERVAL_SECONDS": "0"}, "LEDGER_RETENTION_INTERVAL_SECONDS"),
    ],
)
def test_bad_value_is_refused_naming_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)
