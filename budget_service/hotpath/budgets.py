"""Budgets: configuration, validation, and which budgets cover a request's subject."""

from __future__ import annotations

import json
import sys
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
        object.__setattr__(self, "pairs", frozenset(self.selector.items()))

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
    """The subject as selector pairs; validates every value on the way."""
    pairs = []
    for name in SELECTOR_KEYS:
        value = getattr(subject, name)
        if value:
            pairs.append((name, v.check_value(f"subject.{name}", value)))
    for key, value in subject.tags.items():
        if not key:
            raise InvalidArgument("subject.tags", "has an empty tag name")
        v.check_value(f"subject.tags[{key[:40]!r}]", key)
        pairs.append((f"tag:{key}", v.check_value(f"subject.tags[{key!r}]", value)))
    return frozenset(pairs)


def validate_budget(budget: pb.Budget) -> pb.Budget:
    """A copy of `budget` with defaults filled in, or InvalidArgument naming the field."""
    v.require_id("budget.org", budget.org)
    v.require_id("budget.id", budget.id)
    for key, value in budget.selector.items():
        name = key[4:] if key.startswith("tag:") else None
        if key not in SELECTOR_KEYS and not name:
            raise InvalidArgument(
                f"budget.selector[{key[:40]!r}]",
                "unknown key; use team, project, user, provider, model or tag:<name>",
            )
        if not value:
            raise InvalidArgument(f"budget.selector[{key!r}]", "needs a value")
        v.check_value(f"budget.selector[{key!r}]", value)
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
    out.period = budget.period or pb.PERIOD_MONTH
    out.mode = budget.mode or pb.MODE_HARD
    out.timezone = budget.timezone or "UTC"
    try:
        zone(out.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument(
            "budget.timezone", f"{out.timezone!r} is not an IANA time zone (e.g. Europe/Paris)"
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
