"""The price table: US dollars per million tokens, per "provider/model".

A dated table of the vendors' current models ships with the service (`prices.json` beside this module: its
`as_of` date and `sources` say where the numbers come from). The operator's file (`STEWARD_PRICES_FILE`) is
read over it: an entry there replaces the shipped entry of the same name whole, or adds a model. Either file is
    {"as_of": "2025-12-01", "models": {"anthropic/claude-sonnet-4-5":
        {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}}}
or, for the operator's file, just the `models` object. `input` and `output` are required; `cache_read` and
`cache_write` default to `input` (cached tokens billed as plain input: never cheaper than the truth).

A model the operator does not pay for per token (a local Ollama, vLLM or llama.cpp) is marked free:
`{"ollama/llama3.2": {"free": true}}`, or every model of an upstream at once with `{"ollama/*": {"free": true}}`
(an exact entry wins over the upstream's `*`). The routes file's `"free": true` on an upstream does the same.
The offline demo model is free by design.

Any other model is unpriced: never silently $0. A call to it is refused (MODEL_UNPRICED) when a budget applies
(`metering.py`); otherwise it goes ahead and its usage is recorded with `cost_unknown` (ADR 0022).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from steward.common.v1 import usage_pb2

log = structlog.get_logger(__name__)
DEMO_PROVIDER = "demo"  # services.provider.demo.PROVIDER (not imported: demo imports the adapters)
MICROS_PER_DOLLAR = 1_000_000
TOKENS_PER_UNIT = 1_000_000
SHIPPED = Path(__file__).with_name("prices.json")
_RATES = ("input", "output", "cache_read", "cache_write")
HEADER = ("as_of", "unit", "sources", "notes")  # the dated form's header fields (documentation, except as_of)


@dataclass(frozen=True)
class Price:
    input: float = 0.0  # dollars per million input tokens
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0
    free: bool = False  # marked free by the operator (or the demo model): costs 0, known to cost 0

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


FREE = Price(free=True)


def _entry(source: str, model: str, entry: object) -> Price:
    """One model's price from a file, refused with a clear message when it is not one."""
    if not isinstance(entry, dict) or not set(entry) <= {*_RATES, "free"}:
        raise ValueError(f"{source}: bad price entry for {model!r} (keys: {', '.join(_RATES)}, free)")
    if "free" in entry:
        if entry["free"] is not True or len(entry) > 1:
            raise ValueError(f"{source}: price entry {model!r}: free must be true and stand alone")
        return FREE
    if not {"input", "output"} <= set(entry):
        raise ValueError(f"{source}: price entry {model!r} needs input and output (or free: true)")
    values: dict[str, float] = {}
    for name, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{source}: price entry {model!r}: {name} must be a price of 0 or more")
        values[name] = float(value)
    return Price(
        input=values["input"],
        output=values["output"],
        cache_read=values.get("cache_read", values["input"]),
        cache_write=values.get("cache_write", values["input"]),
    )


def _models(source: str, raw: Any) -> dict[str, Price]:
    """The `models` of a price file (or the whole file, when it is the bare models object)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the price table must be a JSON object")
    models = raw
    if "models" in raw:  # the dated form: a header, and the models
        models = raw["models"]
        unknown = set(raw) - {"models", *HEADER}
        if unknown or not isinstance(models, dict):
            raise ValueError(f"{source}: bad price table: unknown keys {sorted(unknown)} beside models")
    prices = {}
    for model, entry in models.items():
        provider, _, name = str(model).partition("/")
        if not provider or not name:
            raise ValueError(f"{source}: price entry {model!r} must be named provider/model")
        prices[str(model)] = _entry(source, str(model), entry)
    return prices


class PriceTable:
    def __init__(self, prices: dict[str, Price], *, as_of: str = "", free_providers: frozenset[str] = frozenset()):
        self._prices = prices
        self.as_of = as_of  # the shipped table's date
        self._free_providers = free_providers
        self._warned: set[str] = set()

    @classmethod
    def load(cls, path: Path | None, *, free_providers: frozenset[str] = frozenset()) -> PriceTable:
        """The shipped table with the operator's file (if any) over it; `free_providers`: upstreams the routes
        file marks free."""
        shipped = json.loads(SHIPPED.read_text())
        prices = _models(SHIPPED.name, shipped)
        if path is not None:
            prices.update(_models(str(path), json.loads(path.read_text())))
        return cls(prices, as_of=str(shipped.get("as_of", "")), free_providers=free_providers)

    def price(self, provider: str, model: str) -> Price | None:
        """The model's price; FREE for a model marked free; None when it is unpriced (logged once per model)."""
        name = f"{provider}/{model}"
        found = self._prices.get(name) or self._prices.get(f"{provider}/*")
        if found is None and (provider == DEMO_PROVIDER or provider in self._free_providers):
            return FREE  # the offline demo model is free by design; an upstream the routes file marks free
        if found is None and name not in self._warned:
            self._warned.add(name)
            log.warning("no_price_for_model", model=name)
        return found
