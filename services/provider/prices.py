"""The price table: micro-dollars per million tokens, per "provider/model".

Loaded from a JSON file (`STEWARD_PRICES_FILE`):
    {"anthropic/claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}}
in US dollars per million tokens. A model with no entry costs 0 and cannot be
held to a budget: the service logs that once per model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import structlog

from steward.common.v1 import usage_pb2

log = structlog.get_logger(__name__)
DEMO_PROVIDER = "demo"  # services.provider.demo.PROVIDER (not imported: demo imports the adapters)
MICROS_PER_DOLLAR = 1_000_000
TOKENS_PER_UNIT = 1_000_000


@dataclass(frozen=True)
class Price:
    input: float = 0.0  # dollars per million input tokens
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0

    def cost_micros(self, usage: usage_pb2.Usage) -> int:
        dollars = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_input_tokens * self.cache_read
            + usage.cache_write_input_tokens * self.cache_write
        ) / TOKENS_PER_UNIT
        return round(dollars * MICROS_PER_DOLLAR)

    def worst_case_micros(self, input_tokens: int, max_output_tokens: int) -> int:
        """What a call can cost at most: every input token uncached, every output token used."""
        largest_input_price = max(self.input, self.cache_write)
        dollars = (input_tokens * largest_input_price + max_output_tokens * self.output) / TOKENS_PER_UNIT
        return round(dollars * MICROS_PER_DOLLAR) + 1


class PriceTable:
    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = prices
        self._warned: set[str] = set()

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        if path is None:
            return cls({})
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: the price table must be a JSON object")
        prices = {}
        for model, entry in raw.items():
            if not isinstance(entry, dict) or not set(entry) <= {"input", "output", "cache_read", "cache_write"}:
                raise ValueError(f"{path}: bad price entry for {model!r}")
            values = {name: float(value) for name, value in entry.items()}
            if any(value < 0 for value in values.values()):
                raise ValueError(f"{path}: negative price for {model!r}")
            prices[model] = Price(**values)
        return cls(prices)

    def price(self, provider: str, model: str) -> Price:
        name = f"{provider}/{model}"
        found = self._prices.get(name)
        if found is None and provider == DEMO_PROVIDER:
            return Price()  # the offline demo model is free by design
        if found is None:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("no_price_for_model", model=name)
            return Price()
        return found
