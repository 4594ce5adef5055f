"""The project's own price catalog (catalog/bundled.json), loaded as ModelPrices."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pricing_service.prices import ModelPrice

SCHEMA = "budget-authority-prices/1"
SOURCE = "bundled"


def parse(data: dict[str, Any]) -> list[ModelPrice]:
    """ModelPrices from a document in the bundled schema (see catalog/README.md)."""
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document (schema={data.get('schema')!r})")
    models = []
    for entry in data["models"]:
        prices = dict(entry["prices"])
        tiers = [
            {("threshold_tokens" if k == "above_input_tokens" else k): v for k, v in t.items()}
            for t in prices.pop("tiers", None) or []
        ]
        models.append(
            ModelPrice.from_dict(
                {
                    "provider": entry["provider"],
                    "model": entry["model"],
                    "aliases": entry.get("aliases", []),
                    "mode": entry.get("mode", "chat"),
                    "max_input_tokens": entry.get("max_input_tokens"),
                    "max_output_tokens": entry.get("max_output_tokens"),
                    "tiers": tiers,
                    **prices,
                }
            )
        )
    return models


def load() -> list[ModelPrice]:
    """The bundled catalog shipped with the package."""
    text = (resources.files("pricing_service") / "catalog" / "bundled.json").read_text()
    return parse(json.loads(text))
