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
    ],
)
def test_bad_value_is_refused_naming_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)
