"""Checks of request fields: each failure names the field and says how to fix it."""

from __future__ import annotations

import re

from servicekit.errors import InvalidArgument

ID_RE = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ : @ / -"
VALUE_MAX = 256


def require_id(field: str, value: str) -> str:
    """An org, budget, reservation or refund id: non-empty, bounded, safe in a Redis key."""
    if not value:
        raise InvalidArgument(field, f"is required ({ID_RULE})")
    if len(value) > 128:
        raise InvalidArgument(field, f"is {len(value)} characters long; at most 128 are allowed")
    if not ID_RE.fullmatch(value):
        raise InvalidArgument(field, f"{value[:40]!r} has a character outside {ID_RULE}")
    return value


def check_value(field: str, value: str) -> str:
    """A subject or selector value (team, user, model, tag ...): printable and bounded."""
    if len(value) > VALUE_MAX:
        raise InvalidArgument(field, f"is {len(value)} characters long; at most {VALUE_MAX}")
    if not value.isprintable():
        raise InvalidArgument(field, "contains control characters")
    return value


def check_amount(field: str, value: int, max_nanos: int, *, allow_zero: bool = True) -> int:
    """A nano-USD amount of one request: not negative, not absurd."""
    if value < 0:
        raise InvalidArgument(field, f"is {value}; amounts are non-negative nano-USD")
    if value == 0 and not allow_zero:
        raise InvalidArgument(field, "must be greater than 0 nano-USD")
    if value > max_nanos:
        raise InvalidArgument(
            field, f"is {value} nano-USD, above the limit of {max_nanos} for one request"
        )
    return value


def check_enum(field: str, value: int, known: dict[str, int]) -> int:
    """A proto enum value the server knows (proto3 passes unknown numbers through)."""
    if value not in known.values():
        names = ", ".join(name for name in known if not name.endswith("UNSPECIFIED"))
        raise InvalidArgument(field, f"unknown value {value}; use one of {names}")
    return value
