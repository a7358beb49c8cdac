"""The price table: the dated table that ships, the operator's file over it, free models, and unpriced ones."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from services.provider.prices import FREE, SHIPPED, Price, PriceTable
from services.provider.routes import Routes
from steward.common.v1 import usage_pb2

# The models the shipped table must price (the vendors' current ones and their families).
CURRENT = [
    "anthropic/claude-opus-4-5",
    "anthropic/claude-sonnet-4-5",
    "anthropic/claude-haiku-4-5",
    "anthropic/claude-opus-4-1",
    "anthropic/claude-sonnet-4-0",
    "openai/gpt-5.1",
    "openai/gpt-5",
    "openai/gpt-5-mini",
    "openai/gpt-5-nano",
    "openai/gpt-4.1",
    "openai/gpt-4.1-mini",
    "openai/gpt-4.1-nano",
    "openai/gpt-4o",
    "openai/gpt-4o-mini",
    "openai/o3",
    "openai/o4-mini",
]


def _write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_the_shipped_table_is_dated_sourced_and_prices_the_current_models() -> None:
    raw = json.loads(SHIPPED.read_text())
    assert date.fromisoformat(raw["as_of"]) >= date(2025, 11, 24)  # Opus 4.5's prices are in it
    assert raw["unit"] == "US dollars per million tokens"
    assert len(raw["sources"]) == 2
    table = PriceTable.load(None)
    assert table.as_of == raw["as_of"]
    for name in CURRENT:
        provider, _, model = name.partition("/")
        price = table.price(provider, model)
        assert price is not None, name
        assert not price.free
        assert 0 < price.cache_read < price.input < price.output, name  # a cache hit is cheaper than input
        assert price.cache_write >= price.input, name  # a cache write never cheaper
    sonnet = table.price("anthropic", "claude-sonnet-4-5")
    assert sonnet == Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
    assert table.price("openai", "gpt-5.1") == Price(input=1.25, output=10.0, cache_read=0.125, cache_write=1.25)


def test_the_operators_file_replaces_and_adds_entries_and_marks_models_free(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "anthropic/claude-sonnet-4-5": {"input": 2.0, "output": 10.0},  # a negotiated rate, cache rates = input
            "vllm/qwen3": {"input": 0.1, "output": 0.2, "cache_read": 0.01},
            "ollama/*": {"free": True},
            "ollama/paid-proxy": {"input": 1.0, "output": 1.0},  # an exact entry wins over the upstream's *
        },
    )
    table = PriceTable.load(path)
    assert table.price("anthropic", "claude-sonnet-4-5") == Price(2.0, 10.0, 2.0, 2.0)
    assert table.price("anthropic", "claude-haiku-4-5") is not None  # the rest of the shipped table stays
    assert table.price("vllm", "qwen3") == Price(0.1, 0.2, 0.01, 0.1)
    assert table.price("ollama", "llama3.2") is FREE
    assert table.price("ollama", "paid-proxy") == Price(1.0, 1.0, 1.0, 1.0)
    assert table.price("vllm", "other") is None
    assert table.price("demo", "offline") is FREE  # the demo model is free by design
    # The dated form works for the operator's file too.
    dated = _write(tmp_path, {"as_of": "2026-01-01", "models": {"lmstudio/phi": {"free": True}}})
    assert PriceTable.load(dated).price("lmstudio", "phi") is FREE


def test_an_upstream_the_routes_file_marks_free_is_free(tmp_path: Path) -> None:
    upstream = {"protocol": "openai", "base_url": "http://127.0.0.1:11434/v1", "keyless": True}
    path = tmp_path / "routes.json"
    path.write_text(json.dumps({"upstreams": {"ollama": upstream | {"free": True}, "vllm": upstream}}))
    routes = Routes.load(path)
    assert routes.free_providers == {"ollama"}
    table = PriceTable.load(None, free_providers=routes.free_providers)
    assert table.price("ollama", "llama3.2") is FREE
    assert table.price("vllm", "llama3.2") is None
    path.write_text(json.dumps({"upstreams": {"ollama": upstream | {"free": "yes"}}}))
    with pytest.raises(ValueError, match="free must be true or false"):
        Routes.load(path)


def test_free_costs_nothing_and_priced_cache_tokens_are_billed() -> None:
    usage = usage_pb2.Usage(input_tokens=10, output_tokens=10, cache_read_input_tokens=10, cache_write_input_tokens=10)
    assert FREE.cost_micros(usage) == 0
    assert FREE.worst_case_micros(1000, 1000) == 1
    assert Price(1.0, 2.0, 0.5, 1.25).cost_micros(usage) == round(10 * (1.0 + 2.0 + 0.5 + 1.25))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"a/m": {"input": -1, "output": 1}}, "0 or more"),
        ({"a/m": {"input": "1", "output": 1}}, "0 or more"),
        ({"a/m": {"input": True, "output": 1}}, "0 or more"),
        ({"a/m": {"bogus": 1}}, "bad price entry"),
        ({"a/m": {"input": 1}}, "needs input and output"),  # a missing output rate would bill output at $0
        ({"a/m": {"free": False}}, "free must be true"),
        ({"a/m": {"free": True, "input": 1}}, "free must be true and stand alone"),
        ({"model-without-provider": {"input": 1, "output": 1}}, "provider/model"),
        ({"as_of": "2026-01-01", "models": {}, "extra": 1}, "unknown keys"),
        ("[1]", "JSON object"),
    ],
)
def test_bad_price_tables_are_refused(tmp_path: Path, content: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable.load(_write(tmp_path, content))
