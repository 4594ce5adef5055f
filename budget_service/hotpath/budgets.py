"""Budgets: configuration, validation, and which budgets cover a request's subject."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfoNotFoundError

from budget_service.hotpath.periods import zone
from genproto.budget.v1 import budget_pb2 as pb
from servicekit import validation as v
from servicekit.errors import InvalidArgument

MAX_LIMIT_NANOS = 2**62  # int64 counters then have room for holds and overage on top
# $1,000 per million tokens: the catalog's own bound for an absurd (unit-mistake) price
MAX_DEFAULT_PRICE_NANOS_PER_MILLION = 1_000 * 10**9
DEFAULT_THRESHOLDS = (50, 75, 90, 100)
MAX_TIMEZONE_LENGTH = 64  # the longest IANA name, America/Argentina/ComodRivadavia, has 32
SELECTOR_KEYS = ("team", "project", "user", "provider", "model")  # and "tag:<name>"
MODE_NAMES: dict[int, str] = {pb.MODE_HARD: "hard", pb.MODE_SOFT: "soft", pb.MODE_SHADOW: "shadow"}
MODES_BY_NAME = {name: mode for mode, name in MODE_NAMES.items()}


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """One budget as PostgreSQL stores it and Redis mirrors it.

    An org may hold 100,000 of these in every service process: slots, and the strings and
    threshold tuples that repeat from budget to budget shared (from_json), keep each small.
    """

    uid: int
    id: str
    org: str
    selector: dict[str, str]
    limit_nanos: int
    period: int
    timezone: str
    mode: int
    alert_thresholds_percent: tuple[int, ...]
    overdraft_nanos: int
    version: int
    created_at_ms: int = 0
    updated_at_ms: int = 0
    # (input, output) nano-USD per million tokens for models without a catalog price; None: refuse
    unknown_model_price: tuple[int, int] | None = None
    pairs: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # In NFC like every subject (validation.nfc), so a budget stored before selectors were
        # normalized at upsert still covers the requests it was meant to.
        pairs = frozenset((v.nfc(key), v.nfc(value)) for key, value in self.selector.items())
        object.__setattr__(self, "pairs", pairs)

    def applies_to(self, subject_pairs: frozenset[tuple[str, str]]) -> bool:
        """True when every selector pair is in the subject."""
        return self.pairs <= subject_pairs

    @property
    def mode_name(self) -> str:
        return MODE_NAMES[self.mode]

    def to_json(self) -> str:
        """The form kept in Redis (`ba:{org}:cfg`) for other replicas' caches."""
        ump = self.unknown_model_price
        return json.dumps(
            {
                "uid": self.uid,
                "id": self.id,
                "org": self.org,
                "selector": self.selector,
                "limit": str(self.limit_nanos),
                "period": self.period,
                "tz": self.timezone,
                "mode": self.mode,
                "thresholds": list(self.alert_thresholds_percent),
                "od": str(self.overdraft_nanos),
                "version": self.version,
                "created": self.created_at_ms,
                "updated": self.updated_at_ms,
                **({"ump": [str(ump[0]), str(ump[1])]} if ump else {}),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str) -> BudgetConfig:
        d = json.loads(raw)
        ump = d.get("ump")
        return cls(
            uid=d["uid"],
            id=d["id"],
            org=sys.intern(d["org"]),
            selector={sys.intern(k): v for k, v in d["selector"].items()},
            limit_nanos=int(d["limit"]),
            period=d["period"],
            timezone=sys.intern(d["tz"]),
            mode=d["mode"],
            alert_thresholds_percent=_shared_thresholds(d["thresholds"]),
            overdraft_nanos=int(d["od"]),
            version=d["version"],
            created_at_ms=d["created"],
            updated_at_ms=d["updated"],
            unknown_model_price=(int(ump[0]), int(ump[1])) if ump else None,
        )

    def to_proto(self) -> pb.Budget:
        budget = pb.Budget(
            id=self.id,
            org=self.org,
            selector=self.selector,
            limit_nanos=self.limit_nanos,
            period=self.period,  # type: ignore[arg-type]
            timezone=self.timezone,
            mode=self.mode,  # type: ignore[arg-type]
            alert_thresholds_percent=self.alert_thresholds_percent,
            overdraft_nanos=self.overdraft_nanos,
            version=self.version,
        )
        if self.unknown_model_price is not None:
            budget.unknown_model_price.input_nanos_per_million = self.unknown_model_price[0]
            budget.unknown_model_price.output_nanos_per_million = self.unknown_model_price[1]
        budget.created_at.FromMilliseconds(self.created_at_ms)
        budget.updated_at.FromMilliseconds(self.updated_at_ms)
        return budget


_THRESHOLDS: dict[tuple[int, ...], tuple[int, ...]] = {}


def _shared_thresholds(values: list[int]) -> tuple[int, ...]:
    """One tuple object per distinct list of thresholds (most budgets keep the defaults)."""
    key = tuple(values)
    if len(_THRESHOLDS) > 10_000:  # bounded: distinct lists are few, unless someone tries
        _THRESHOLDS.clear()
    return _THRESHOLDS.setdefault(key, key)


def subject_pairs(subject: pb.Subject) -> frozenset[tuple[str, str]]:
    """The subject as selector pairs, validated, bounded and in NFC (see servicekit.validation)."""
    pairs: dict[str, str] = {}
    for name in SELECTOR_KEYS:
        value = getattr(subject, name)
        if value:
            pairs[name] = v.check_value(f"subject.{name}", value)
    if len(subject.tags) > v.MAX_TAGS:
        raise InvalidArgument(
            "subject.tags", f"has {len(subject.tags)} tags; at most {v.MAX_TAGS} are allowed"
        )
    for key, value in subject.tags.items():
        name = v.check_tag_name("subject.tags", key)
        field = f"subject.tags[{v.shown(name)}]"
        if f"tag:{name}" in pairs:
            raise InvalidArgument(field, "is given twice (the same name in two Unicode forms)")
        pairs[f"tag:{name}"] = v.check_value(field, value)
    v.check_size("subject", pairs)
    return frozenset(pairs.items())


def _selector(selector: Mapping[str, str]) -> dict[str, str]:
    """A budget's selector validated, bounded and in NFC, as it is stored."""
    out: dict[str, str] = {}
    tags = 0
    for key, value in selector.items():
        if key.startswith("tag:"):
            tags += 1
            key = "tag:" + v.check_tag_name(f"budget.selector[{v.shown(key)}]", key[4:])
        elif key not in SELECTOR_KEYS:
            raise InvalidArgument(
                f"budget.selector[{v.shown(key)}]",
                "unknown key; use team, project, user, provider, model or tag:<name>",
            )
        field = f"budget.selector[{v.shown(key)}]"
        if not value:
            raise InvalidArgument(field, "needs a value")
        if key in out:
            raise InvalidArgument(field, "is given twice (the same name in two Unicode forms)")
        out[key] = v.check_value(field, value)
    if tags > v.MAX_TAGS:
        raise InvalidArgument("budget.selector", f"has {tags} tags; at most {v.MAX_TAGS}")
    v.check_size("budget.selector", out)
    return out


def validate_budget(budget: pb.Budget) -> pb.Budget:
    """A copy of `budget` with defaults filled in, or InvalidArgument naming the field."""
    v.require_id("budget.org", budget.org)
    v.require_id("budget.id", budget.id)
    selector = _selector(budget.selector)
    if budget.limit_nanos < 0 or budget.limit_nanos > MAX_LIMIT_NANOS:
        raise InvalidArgument(
            "budget.limit_nanos", f"is {budget.limit_nanos}; use 0 to {MAX_LIMIT_NANOS} nano-USD"
        )
    if budget.overdraft_nanos < 0 or budget.overdraft_nanos > MAX_LIMIT_NANOS:
        raise InvalidArgument(
            "budget.overdraft_nanos",
            f"is {budget.overdraft_nanos}; use 0 to {MAX_LIMIT_NANOS} nano-USD",
        )
    if budget.HasField("unknown_model_price"):
        _check_unknown_model_price(budget.unknown_model_price)
    v.check_enum("budget.period", budget.period, dict(pb.Period.items()))
    v.check_enum("budget.mode", budget.mode, dict(pb.Mode.items()))
    out = pb.Budget()
    out.CopyFrom(budget)
    out.selector.clear()
    out.selector.update(selector)
    out.period = budget.period or pb.PERIOD_MONTH
    out.mode = budget.mode or pb.MODE_HARD
    out.timezone = budget.timezone or "UTC"
    try:
        if len(out.timezone) > MAX_TIMEZONE_LENGTH:
            raise ValueError("no IANA name is this long")
        zone(out.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidArgument(
            "budget.timezone",
            f"{v.shown(out.timezone)} is not an IANA time zone (e.g. Europe/Paris)",
        ) from exc
    thresholds = list(budget.alert_thresholds_percent) or list(DEFAULT_THRESHOLDS)
    for t in thresholds:
        if not 1 <= t <= 1000:
            raise InvalidArgument("budget.alert_thresholds_percent", f"{t} is outside 1-1000")
    del out.alert_thresholds_percent[:]
    out.alert_thresholds_percent.extend(sorted(set(thresholds)))
    return out


def _check_unknown_model_price(price: pb.UnknownModelPrice) -> None:
    for name in ("input_nanos_per_million", "output_nanos_per_million"):
        value = getattr(price, name)
        if not 0 <= value <= MAX_DEFAULT_PRICE_NANOS_PER_MILLION:
            raise InvalidArgument(
                f"budget.unknown_model_price.{name}",
                f"is {value}; use 0 to {MAX_DEFAULT_PRICE_NANOS_PER_MILLION} nano-USD per"
                " million tokens ($3 per million is 3000000000)",
            )
    if price.input_nanos_per_million == 0 and price.output_nanos_per_million == 0:
        raise InvalidArgument(
            "budget.unknown_model_price",
            "prices every token at $0, so unknown models would never count; set"
            " input_nanos_per_million and/or output_nanos_per_million, or leave it unset",
        )
