"""Checks of request fields: each failure names the field and says how to fix it.

Bounds are in bytes, so what a request may hold is what Redis and PostgreSQL will store:

    ids (org, budget, reservation, refund)   1-128 bytes of ASCII: A-Z a-z 0-9 . _ : @ / -
    a subject or selector value              at most 256 bytes of UTF-8, printable
    a tag name                               1-64 bytes of UTF-8, printable
    tags of one subject or selector          at most 16
    a whole subject or selector              at most 4096 bytes of UTF-8 (names and values)

Text values are compared in Unicode NFC: `nfc` is the one place that normalizes them, and every
value, tag name and selector goes through it, so "é" typed composed or decomposed is one user,
one budget.
"""

from __future__ import annotations

import re
import unicodedata

from servicekit.errors import InvalidArgument

ID_MAX_BYTES = 128
ID_RE = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
ID_RULE = "1-128 characters from A-Z a-z 0-9 . _ : @ / -"
VALUE_MAX_BYTES = 256
TAG_NAME_MAX_BYTES = 64
MAX_TAGS = 16
SUBJECT_MAX_BYTES = 4096
# NFC can shorten a string (a letter and its combining marks become one character), at most
# four characters to one (Greek omega with three marks): anything longer than this many times
# the bound is refused before it is normalized.
_NORMALIZABLE_FACTOR = 4


def shown(text: str, limit: int = 40) -> str:
    """`text` quoted for a message, cut to `limit` characters: input never floods a message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def utf8_len(text: str) -> int:
    """The length of `text` in UTF-8 bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def nfc(text: str) -> str:
    """`text` in Unicode NFC: the one normalization every compared value goes through."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def require_id(field: str, value: str) -> str:
    """An org, budget, reservation or refund id: non-empty, bounded, safe in a Redis key."""
    if not value:
        raise InvalidArgument(field, f"is required ({ID_RULE})")
    if len(value) > ID_MAX_BYTES:
        raise InvalidArgument(
            field, f"is {len(value)} characters long; at most {ID_MAX_BYTES} (ASCII) are allowed"
        )
    if not ID_RE.fullmatch(value):
        raise InvalidArgument(field, f"{shown(value)} has a character outside {ID_RULE}")
    return value


def check_value(field: str, value: str, max_bytes: int = VALUE_MAX_BYTES) -> str:
    """A subject or selector value (team, user, model, tag ...): printable, bounded, in NFC."""
    if len(value) > _NORMALIZABLE_FACTOR * max_bytes:
        raise InvalidArgument(
            field, f"is {utf8_len(value)} bytes long (UTF-8); at most {max_bytes} are allowed"
        )
    value = nfc(value)
    size = utf8_len(value)
    if size > max_bytes:
        raise InvalidArgument(
            field, f"is {size} bytes long (UTF-8); at most {max_bytes} are allowed"
        )
    if not value.isprintable():
        raise InvalidArgument(field, "contains control characters")
    return value


def check_tag_name(field: str, name: str) -> str:
    """A tag name (of a subject's tags or a `tag:<name>` selector key): non-empty, bounded."""
    if not name:
        raise InvalidArgument(field, "has an empty tag name")
    return check_value(field, name, TAG_NAME_MAX_BYTES)


def check_size(field: str, pairs: dict[str, str]) -> None:
    """A whole subject or selector (its names and values together) within SUBJECT_MAX_BYTES."""
    size = sum(utf8_len(key) + utf8_len(value) for key, value in pairs.items())
    if size > SUBJECT_MAX_BYTES:
        raise InvalidArgument(
            field,
            f"is {size} bytes long (names and values, UTF-8); at most {SUBJECT_MAX_BYTES}",
        )


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
