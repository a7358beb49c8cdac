"""The adapter for the Anthropic Messages API (protocol "anthropic").

The SDK (about 1.2 s to import) is imported at the first call, not with this
module. Requests go out with the SDK's retries off; the stream's raw events
are turned into normalized GenerateResponse events.

Not sent: `temperature`. anthropic 2.x speaks API version 2026-10-21, which
removed the sampling parameters (the SDK has no argument for them and the API
answers 400 to any value), so the request's temperature is ignored here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from services.provider.adapters.base import GenerateCall, Upstream, UpstreamError, accepted, merge_deltas
from services.provider.adapters.clients import SdkClients
from services.provider.adapters.errors import SdkErrors, classify, stream_error
from services.provider.adapters.names import ToolNames
from services.provider.adapters.sse import SseDecoder
from services.provider.adapters.wire import EMPTY, Json, event_object, get_int, get_object, get_str
from steward.common.v1 import content_pb2, usage_pb2
from steward.provider.v1 import provider_service_pb2 as pb

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import (
        MessageParam,
        TextBlockParam,
        ThinkingBlockParam,
        ToolParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
    )
    from anthropic.types.message_create_params import MessageCreateParamsStreaming

    _Block = TextBlockParam | ThinkingBlockParam | ToolUseBlockParam | ToolResultBlockParam

DEFAULT_BASE_URL = "https://api.anthropic.com"

_STOP_REASONS: dict[str, pb.StopReason.ValueType] = {
    "end_turn": pb.STOP_REASON_END_TURN,
    "pause_turn": pb.STOP_REASON_END_TURN,
    "tool_use": pb.STOP_REASON_TOOL_USE,
    "max_tokens": pb.STOP_REASON_MAX_TOKENS,
    "model_context_window_exceeded": pb.STOP_REASON_MAX_TOKENS,
    "stop_sequence": pb.STOP_REASON_STOP_SEQUENCE,
    "refusal": pb.STOP_REASON_CONTENT_FILTER,
}


def sdk_errors() -> SdkErrors:
    """The anthropic SDK's exception classes (imports the SDK)."""
    import anthropic

    return SdkErrors(
        base=anthropic.AnthropicError,
        api=anthropic.APIError,
        status=anthropic.APIStatusError,
        validation=anthropic.APIResponseValidationError,
        connection=anthropic.APIConnectionError,
        timeout=anthropic.APITimeoutError,
    )


class AnthropicAdapter:
    """Streams calls to Anthropic (or an Anthropic-compatible base URL), one cached SDK client per (URL, key)."""

    def __init__(self, *, connect_timeout: float = 10.0, read_timeout: float = 120.0, max_clients: int = 32) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._clients: SdkClients[AsyncAnthropic] = SdkClients("anthropic", DEFAULT_BASE_URL, self._build, max_clients)

    def _build(self, base_url: str, api_key: str) -> AsyncAnthropic:
        import anthropic

        # Explicit api_key and base_url: the SDK would otherwise read them (and more) from the environment.
        return anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=anthropic.Timeout(self._read_timeout, connect=self._connect_timeout),
            http_client=anthropic.DefaultAioHttpClient(),
        )

    async def warm_up(self) -> None:
        """Import the SDK in a worker thread, so that the first call does not block the event loop on it."""
        await self._clients.warm_up()

    async def aclose(self) -> None:
        """Close every cached client."""
        await self._clients.aclose()

    async def stream(self, upstream: Upstream, api_key: str, call: GenerateCall) -> AsyncIterator[pb.GenerateResponse]:
        import anthropic

        sdk = sdk_errors()
        names = ToolNames(tool.name for tool in call.tools)
        system, messages = translate_messages(call, names)
        tools = translate_tools(call, names)
        body: MessageCreateParamsStreaming = {
            "model": call.model,
            "max_tokens": call.max_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = tools
        if call.stop_sequences:
            body["stop_sequences"] = list(call.stop_sequences)
        if call.reasoning_budget_tokens > 0:
            body["thinking"] = {"type": "enabled", "budget_tokens": call.reasoning_budget_tokens}
        started = False
        try:
            client = self._clients.get(upstream.base_url, api_key)
            # The SDK sends the request and raises for an error status; the streamed body is read here (sse.py),
            # one batch of events per read.
            stream = await client.post(
                "/v1/messages", body=body, cast_to=object, stream=True, stream_cls=anthropic.AsyncStream[object]
            )
            started = True
            yield accepted()
            decoder = SseDecoder()
            translator = EventTranslator(names)
            async with stream:
                async for chunk in stream.response.aiter_bytes():
                    out: list[pb.GenerateResponse] = []
                    try:
                        for event in decoder.feed(chunk):
                            if event.name == "error":
                                raise stream_error(_json_or_text(event.data), api_key)
                            if event.name and event.name != "ping" and event.data:
                                out += translator.feed(event_object(json.loads(event.data)))
                    finally:  # what came before a bad event still goes out, before its error
                        for merged in merge_deltas(out):
                            yield merged
            if not translator.done:
                raise UpstreamError("STREAM_CUT", "the stream ended before message_stop", transient=True)
        except Exception as exc:
            error = classify(exc, sdk, api_key=api_key, streaming=started)
            if error is None or error is exc:
                raise
            raise error from exc


def _json_or_text(data: str) -> object:
    try:
        return json.loads(data)
    except ValueError:
        return data


def _arguments(arguments_json: str) -> dict[str, object]:
    """A tool call's arguments as the object the API wants back.

    Arguments that are not a JSON object (a call cut off by max_tokens) are sent as {}: the
    conversation must stay sendable, and the tool result already told the model what went wrong.
    """
    try:
        value = json.loads(arguments_json) if arguments_json.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _message_blocks(message: content_pb2.ChatMessage, names: ToolNames) -> list[_Block]:
    results: list[_Block] = []
    others: list[_Block] = []
    assistant = message.role == content_pb2.ROLE_ASSISTANT
    for block in message.content:
        kind = block.WhichOneof("block")
        if kind == "text" and block.text.text:
            others.append({"type": "text", "text": block.text.text})
        elif kind == "reasoning" and assistant and block.reasoning.signature:
            others.append(
                {"type": "thinking", "thinking": block.reasoning.text, "signature": block.reasoning.signature}
            )
        elif kind == "tool_call":
            call = block.tool_call
            others.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": names.wire(call.name),
                    "input": _arguments(call.arguments_json),
                }
            )
        elif kind == "tool_result":
            result = block.tool_result
            out: ToolResultBlockParam = {"type": "tool_result", "tool_use_id": result.tool_call_id}
            if result.content:
                out["content"] = result.content
            if result.is_error:
                out["is_error"] = True
            results.append(out)
    return results + others  # tool results must open a user message


def _mark_cached(per_message: list[list[_Block]], last_index: int) -> None:
    """Put a cache breakpoint on the last cacheable block of messages[0..last_index]."""
    for blocks in reversed(per_message[: last_index + 1]):
        for block in reversed(blocks):
            if block["type"] == "thinking":
                continue  # thinking blocks take no cache_control
            block["cache_control"] = {"type": "ephemeral"}
            return


def translate_messages(call: GenerateCall, names: ToolNames) -> tuple[list[TextBlockParam], list[MessageParam]]:
    """The system blocks and the messages of a call, with cache breakpoints and same-role messages merged."""
    system_texts = [call.system] if call.system else []
    roles: list[str] = []
    per_message: list[list[_Block]] = []
    for message in call.messages:
        if message.role == content_pb2.ROLE_SYSTEM:
            system_texts.extend(b.text.text for b in message.content if b.WhichOneof("block") == "text")
            roles.append("system")
            per_message.append([])
            continue
        roles.append("assistant" if message.role == content_pb2.ROLE_ASSISTANT else "user")
        per_message.append(_message_blocks(message, names))

    system: list[TextBlockParam] = []
    system_text = "\n\n".join(t for t in system_texts if t)
    if system_text:
        system.append({"type": "text", "text": system_text})
    if (call.prompt_cache or call.cache_prefix_messages > 0) and system:
        system[0]["cache_control"] = {"type": "ephemeral"}
    if call.cache_prefix_messages > 0:
        _mark_cached(per_message, min(call.cache_prefix_messages, len(per_message)) - 1)

    merged: list[tuple[str, list[_Block]]] = []
    for role, blocks in zip(roles, per_message, strict=True):
        if not blocks:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    messages: list[MessageParam] = [
        {"role": "assistant", "content": blocks} if role == "assistant" else {"role": "user", "content": blocks}
        for role, blocks in merged
    ]
    return system, messages


def translate_tools(call: GenerateCall, names: ToolNames) -> list[ToolParam]:
    tools: list[ToolParam] = []
    for tool in call.tools:
        try:
            schema = json.loads(tool.input_schema_json) if tool.input_schema_json.strip() else {"type": "object"}
        except ValueError as exc:
            raise UpstreamError(
                "BAD_REQUEST", f"tool {tool.name!r} has an invalid input schema", transient=False
            ) from exc
        if not isinstance(schema, dict):
            raise UpstreamError("BAD_REQUEST", f"tool {tool.name!r} has a non-object input schema", transient=False)
        spec: ToolParam = {"name": names.wire(tool.name), "input_schema": schema}
        if tool.description:
            spec["description"] = tool.description
        tools.append(spec)
    if tools and (call.prompt_cache or call.cache_prefix_messages > 0):
        tools[-1]["cache_control"] = {"type": "ephemeral"}  # the tools come first in the cached prefix
    return tools


class EventTranslator:
    """Raw Messages stream events → normalized events, for one answer."""

    def __init__(self, names: ToolNames) -> None:
        self._names = names
        self._usage = usage_pb2.Usage()
        self._tools: dict[int, int] = {}  # content block index → tool call index
        self._tool_args: dict[int, bool] = {}  # content block index → any argument text seen
        self._tool_input: dict[int, object] = {}  # content block index → input given at block start
        self._stop_reason: str | None = None
        self._stop_sequence = ""
        self.done = False

    def _usage_event(self) -> pb.GenerateResponse:
        usage = usage_pb2.Usage()
        usage.CopyFrom(self._usage)
        return pb.GenerateResponse(usage=usage)

    def feed(self, event: Json) -> list[pb.GenerateResponse]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(get_int(event, "index"), get_object(event, "delta"))
        if kind == "message_start":
            start = get_object(get_object(event, "message") or EMPTY, "usage")
            if start is None:  # a compatible server that counts nothing
                return []
            self._usage.input_tokens = get_int(start, "input_tokens") or 0
            self._usage.output_tokens = get_int(start, "output_tokens") or 0
            self._usage.cache_read_input_tokens = get_int(start, "cache_read_input_tokens") or 0
            self._usage.cache_write_input_tokens = get_int(start, "cache_creation_input_tokens") or 0
            return [self._usage_event()]
        if kind == "content_block_start":
            return self._block_start(get_int(event, "index"), get_object(event, "content_block") or EMPTY)
        if kind == "content_block_stop":
            return self._block_stop(get_int(event, "index"))
        if kind == "message_delta":
            delta = get_object(event, "delta") or EMPTY
            stop_reason = get_str(delta, "stop_reason")
            if stop_reason is not None:
                self._stop_reason = stop_reason
                self._stop_sequence = get_str(delta, "stop_sequence") or ""
            usage = get_object(event, "usage")
            if usage is None:
                return []
            self._usage.output_tokens = get_int(usage, "output_tokens") or 0
            for field, name in (
                ("input_tokens", "input_tokens"),
                ("cache_read_input_tokens", "cache_read_input_tokens"),
                ("cache_creation_input_tokens", "cache_write_input_tokens"),
            ):
                value = get_int(usage, field)
                if value is not None:
                    setattr(self._usage, name, value)
            return [self._usage_event()]
        if kind == "message_stop" and not self.done:
            self.done = True
            reason = _STOP_REASONS.get(self._stop_reason or "end_turn", pb.STOP_REASON_END_TURN)
            sequence = self._stop_sequence if reason == pb.STOP_REASON_STOP_SEQUENCE else ""
            return [pb.GenerateResponse(finished=pb.GenerateFinished(stop_reason=reason, stop_sequence=sequence))]
        return []

    def _delta(self, index: int | None, delta: Json | None) -> list[pb.GenerateResponse]:
        if delta is None:
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            text = get_str(delta, "text")
            return [pb.GenerateResponse(text_delta=pb.TextDelta(text=text))] if text else []
        if kind == "thinking_delta":
            return [pb.GenerateResponse(reasoning_delta=pb.ReasoningDelta(text=get_str(delta, "thinking") or ""))]
        if kind == "signature_delta":
            signature = get_str(delta, "signature") or ""
            return [pb.GenerateResponse(reasoning_delta=pb.ReasoningDelta(signature=signature))]
        partial = get_str(delta, "partial_json")
        if kind == "input_json_delta" and index in self._tools and partial:
            self._tool_args[index] = True
            args = pb.ToolCallArgumentsDelta(index=self._tools[index], arguments_json_delta=partial)
            return [pb.GenerateResponse(tool_call_arguments_delta=args)]
        return []

    def _block_start(self, index: int | None, block: Json) -> list[pb.GenerateResponse]:
        kind = block.get("type")
        if kind == "tool_use" and index is not None:
            tool_index = len(self._tools)
            self._tools[index] = tool_index
            self._tool_input[index] = block.get("input")
            name = self._names.name(get_str(block, "name") or "")
            started = pb.ToolCallStarted(index=tool_index, id=get_str(block, "id") or "", name=name)
            return [pb.GenerateResponse(tool_call_started=started)]
        if kind == "text":
            text = get_str(block, "text")
            return [pb.GenerateResponse(text_delta=pb.TextDelta(text=text))] if text else []
        if kind == "thinking":
            thinking, signature = get_str(block, "thinking") or "", get_str(block, "signature") or ""
            if not thinking and not signature:
                return []
            return [pb.GenerateResponse(reasoning_delta=pb.ReasoningDelta(text=thinking, signature=signature))]
        return []  # redacted thinking and server-tool blocks have no normalized form

    def _block_stop(self, index: int | None) -> list[pb.GenerateResponse]:
        if index is None or index not in self._tools:
            return []
        tool_index = self._tools[index]
        out: list[pb.GenerateResponse] = []
        if not self._tool_args.get(index):
            # No argument fragments (a tool without parameters): send the input given at block start, so
            # that the fragments always concatenate to a JSON object.
            start_input = self._tool_input.get(index)
            text = json.dumps(start_input if isinstance(start_input, dict) else {})
            out.append(
                pb.GenerateResponse(
                    tool_call_arguments_delta=pb.ToolCallArgumentsDelta(index=tool_index, arguments_json_delta=text)
                )
            )
        out.append(pb.GenerateResponse(tool_call_finished=pb.ToolCallFinished(index=tool_index)))
        return out
