"""The offline demo model: streams a deterministic answer with no key and no network.

It exists so that a fresh install works end to end; its name (`demo/offline`)
and its answers say plainly that it is not a real model. It can call tools, so
the whole agent loop (tools, confirmations) runs offline too:

- when the last message holds tool results, it answers with a summary of them;
- when the last user message names one of the offered tools (its full name, or
  the part after the last "."), it calls that tool once, with arguments built
  from the tool's JSON Schema: the text after the tool's name (or the whole
  message when nothing follows it) goes to the first required string field
  (`create_note Groceries` gives the title "Groceries", `calc 2+3*4` the
  expression "2+3*4"); other required fields get placeholder values;
- otherwise it answers in text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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
        supports_tools=True,
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


def _tool_to_call(call: GenerateCall) -> tuple[content_pb2.ToolSpec, str] | None:
    """The tool the last user message names, and the text after its name (else the whole message)."""
    if not call.tools or not call.messages or call.messages[-1].role != content_pb2.ROLE_USER:
        return None
    said = _last_user_text(call.messages).strip()
    for tool in call.tools:
        short = tool.name.rsplit(".", 1)[-1]
        for name in (tool.name, short):
            found = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", said, re.IGNORECASE)
            if found:
                rest = said[found.end() :].strip(" \t\n:,")
                return tool, rest or said
    return None


def _arguments(tool: content_pb2.ToolSpec, said: str) -> str:
    """Arguments that satisfy the tool's schema's required fields, as far as a demo can: the first required string
    field gets `said`, other string fields the same (a demo cannot tell them apart)."""
    try:
        schema = json.loads(tool.input_schema_json or "{}")
    except json.JSONDecodeError:
        schema = {}
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    samples: dict[str, object] = {
        "string": said,
        "integer": 1,
        "number": 1,
        "boolean": False,
        "array": [],
        "object": {},
    }
    arguments = {}
    for name in schema.get("required", []) if isinstance(schema, dict) else []:
        kind = properties.get(name, {}).get("type", "string") if isinstance(properties.get(name), dict) else "string"
        arguments[name] = samples.get(kind if isinstance(kind, str) else "string", said)
    return json.dumps(arguments)


def _results_summary(message: content_pb2.ChatMessage) -> str:
    parts = []
    for block in message.content:
        if block.HasField("tool_result"):
            result = block.tool_result
            content = result.content if len(result.content) <= 300 else result.content[:300] + "…"
            parts.append(f"{'an error' if result.is_error else 'a result'}: {content}")
    return "; ".join(parts) or "nothing"


def answer(messages: list[content_pb2.ChatMessage]) -> str:
    if messages and messages[-1].role == content_pb2.ROLE_TOOL:
        return (
            "This is Steward's offline demo model. The tools returned "
            f"{_results_summary(messages[-1])}. Add a provider key to talk to a real model (docs/real-model.md)."
        )
    said = _last_user_text(messages).strip()
    quoted = said if len(said) <= 400 else said[:400] + "…"
    return (
        "This is Steward's offline demo model: no real model was called (this agent's route leads to the demo "
        f'model). You said: "{quoted}". Add a provider key to talk to a real model (docs/real-model.md).'
    )


class DemoAdapter:
    """The offline demo model as an adapter: no key, no network."""

    def __init__(self, token_interval: float) -> None:
        self._token_interval = token_interval

    async def stream(self, upstream: Upstream, api_key: str, call: GenerateCall) -> AsyncIterator[pb.GenerateResponse]:
        """Stream a tool call, or the demo answer as text deltas; then usage and a finish event."""
        named = _tool_to_call(call)
        if named is not None:
            tool, said = named
            arguments = _arguments(tool, said)
            call_id = f"demo_{hashlib.sha256(arguments.encode() + tool.name.encode()).hexdigest()[:12]}"
            yield pb.GenerateResponse(tool_call_started=pb.ToolCallStarted(index=0, id=call_id, name=tool.name))
            yield pb.GenerateResponse(
                tool_call_arguments_delta=pb.ToolCallArgumentsDelta(index=0, arguments_json_delta=arguments)
            )
            yield pb.GenerateResponse(tool_call_finished=pb.ToolCallFinished(index=0))
            yield pb.GenerateResponse(usage=usage_pb2.Usage(input_tokens=_count_tokens(call.system), output_tokens=1))
            yield pb.GenerateResponse(finished=pb.GenerateFinished(stop_reason=pb.STOP_REASON_TOOL_USE))
            return
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
