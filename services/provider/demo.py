"""The offline demo model: streams a deterministic answer with no key and no network.

It exists so that a fresh install works end to end; its name (`demo/offline`)
and its answers say plainly that it is not a real model.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from services.provider.adapters.base import GenerateCall, Upstream
from steward.common.v1 import content_pb2, usage_pb2
from steward.provider.v1 import model_route_pb2
from steward.provider.v1 import provider_service_pb2 as pb

PROVIDER = "demo"
MODEL = "offline"
MODEL_NAME = f"{PROVIDER}/{MODEL}"
ROUTE = "demo"
_TOKEN = re.compile(r"\S+\s*|\s+")


def model() -> model_route_pb2.Model:
    return model_route_pb2.Model(
        name=MODEL_NAME,
        provider=PROVIDER,
        model=MODEL,
        offline_demo=True,
        available=True,
        supports_tools=False,
        context_window_tokens=32_000,
        max_output_tokens=4_096,
    )


def route() -> model_route_pb2.ModelRoute:
    return model_route_pb2.ModelRoute(
        name=ROUTE,
        description="The offline demo model; used when no provider key is configured.",
        primary=model_route_pb2.ModelTarget(provider=PROVIDER, model=MODEL),
    )


def _last_user_text(messages: list[content_pb2.ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == content_pb2.ROLE_USER:
            return " ".join(block.text.text for block in message.content if block.HasField("text"))
    return ""


def _count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def answer(messages: list[content_pb2.ChatMessage]) -> str:
    said = _last_user_text(messages).strip()
    quoted = said if len(said) <= 400 else said[:400] + "…"
    return (
        "This is Steward's offline demo model: no provider key is configured, so no real model "
        f'was called. You said: "{quoted}". Add a provider key to talk to a real model.'
    )


class DemoAdapter:
    """The offline demo model as an adapter: no key, no network."""

    def __init__(self, token_interval: float) -> None:
        self._token_interval = token_interval

    async def stream(self, upstream: Upstream, api_key: str, call: GenerateCall) -> AsyncIterator[pb.GenerateResponse]:
        """Stream the demo answer as text deltas, then usage and a finish event."""
        text = answer(call.messages)
        pieces = _TOKEN.findall(text)
        limit = call.max_tokens or len(pieces)
        for piece in pieces[:limit]:
            yield pb.GenerateResponse(text_delta=pb.TextDelta(text=piece))
            if self._token_interval:
                await asyncio.sleep(self._token_interval)
        input_tokens = sum(_count_tokens(b.text.text) for m in call.messages for b in m.content if b.HasField("text"))
        input_tokens += _count_tokens(call.system)
        yield pb.GenerateResponse(
            usage=usage_pb2.Usage(input_tokens=input_tokens, output_tokens=min(limit, len(pieces)))
        )
        stop = pb.STOP_REASON_MAX_TOKENS if limit < len(pieces) else pb.STOP_REASON_END_TURN
        yield pb.GenerateResponse(finished=pb.GenerateFinished(stop_reason=stop))
