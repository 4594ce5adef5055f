"""Money as int nano-USD (1e-9 USD), converted from dollars exactly; floats are refused."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TypeAlias

Nanos: TypeAlias = int
"""An amount of money in nano-USD: `$0.04` is `40_000_000`."""

NANOS_PER_USD = 1_000_000_000
INT64_MAX = 2**63 - 1

_FLOAT_REFUSED = (
    "money is never a float (0.1 has no exact binary value): pass a Decimal or a string of "
    "dollars such as '0.04', or int nano-USD"
)


def usd_to_nanos(amount: Decimal | str | int) -> Nanos:
    """Nano-USD from dollars, exactly: `usd_to_nanos("0.04") == 40_000_000`.

    Raises TypeError for a float (or anything but Decimal, str, int) and ValueError for text that
    is not a number, a non-finite value, more precision than one nano-USD, or an amount outside
    int64 nano-USD.
    """
    if isinstance(amount, float):
        raise TypeError(_FLOAT_REFUSED)
    if isinstance(amount, bool) or not isinstance(amount, Decimal | str | int):
        raise TypeError(f"dollars must be a Decimal, str or int, not {type(amount).__name__}")
    if isinstance(amount, str):
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            raise ValueError(f"{amount!r} is not a dollar amount (e.g. '12.50')") from None
    else:
        value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"{amount!r} is not a finite dollar amount")
    # Integer arithmetic on the decimal's digits: Decimal multiplication rounds past 28 digits.
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    coefficient = int("".join(map(str, digits)) or "0")
    shift = exponent + 9
    if shift >= 0:
        nanos = coefficient * int(10**shift)
    else:
        nanos, rest = divmod(coefficient, int(10**-shift))
        if rest:
            raise ValueError(f"{amount!r} has more precision than one nano-USD (9 decimals)")
    nanos = -nanos if sign else nanos
    if not -INT64_MAX - 1 <= nanos <= INT64_MAX:
        raise ValueError(f"{amount!r} dollars is outside int64 nano-USD")
    return nanos


def nanos_to_usd(nanos: Nanos) -> Decimal:
    """Dollars from nano-USD, exactly: `nanos_to_usd(40_000_000) == Decimal("0.040000000")`."""
    return Decimal(check_nanos("nanos", nanos)).scaleb(-9)


def check_nanos(name: str, value: object) -> Nanos:
    """`value` if it is an int64 amount of nano-USD; TypeError for floats and other types."""
    if isinstance(value, float):
        raise TypeError(f"{name}: {_FLOAT_REFUSED}")
    if isinstance(value, bool) or not isinstance(value, int):
        hint = " (convert dollars with usd_to_nanos)" if isinstance(value, Decimal | str) else ""
        raise TypeError(f"{name} must be int nano-USD, not {type(value).__name__}{hint}")
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError(f"{name} is {value}: outside int64 nano-USD")
    return value
