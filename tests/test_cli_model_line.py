"""`steward up` says which model the default agent uses, and why, from what GET /api/v1/model-routes answers."""

from __future__ import annotations

from typing import Any

from cli.supervisor import model_line


def _listing(selected: str | None, key: str | None) -> dict[str, Any]:
    auto = {"name": "auto", "selected": selected, "selected_key": key}
    demo = {"name": "demo", "selected": "demo/offline", "selected_key": None}
    providers = [{"name": "openai", "available": key is not None}, {"name": "demo", "available": True}]
    return {"routes": [auto, demo], "providers": providers}


def test_the_banner_tells_the_truth_about_the_default_agents_model() -> None:
    assert model_line(_listing("demo/offline", None), "").startswith("model: demo/offline (no provider key is")
    assert model_line(_listing("openai/gpt-4o-mini", "instance"), "") == (
        "model: openai/gpt-4o-mini (route auto; the first provider with a key; the instance's key)"
    )
    assert model_line(_listing("demo/offline", None), "demo").startswith(
        "model: demo/offline (pinned by STEWARD_DEFAULT_MODEL_ROUTE=demo;"
    )
    assert "no openai key is configured" in model_line(_listing("demo/offline", None), "openai/gpt-4o-mini")
    assert model_line(_listing("openai/gpt-4o-mini", "user"), "openai/gpt-5") == (
        "model: openai/gpt-5 (pinned by STEWARD_DEFAULT_MODEL_ROUTE=openai/gpt-5)"
    )
    assert "names no route or provider" in model_line(_listing(None, None), "nope")
    assert model_line(None, "").startswith("model: unknown")
