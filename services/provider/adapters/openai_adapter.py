"""The adapter for OpenAI Chat Completions (protocol "openai").

Serves OpenAI itself (base_url None) and every OpenAI-compatible server (Ollama,
vLLM, llama.cpp, LM Studio, Gemini's OpenAI endpoint, ...) by its base URL,
which includes `/v1`. Compatible servers get the lowest common denominator:
`max_tokens` instead of `max_completion_tokens`, and no `prompt_cache_key`.

Not translated: reasoning blocks (Chat Completions takes none back). The
reasoning budget becomes `reasoning_effort` (Chat Completions has no budget):
its share of max_tokens picks low, medium or high (`reasoning_effort`); no
budget sends none. Reasoning streamed by compatible servers
(`reasoning_content` or `reasoning` deltas) is passed on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from services.provider.adapters.base import GenerateCall, Upstream, UpstreamError, accepted, merge_deltas
from services.provider.adapters.clients import SdkClients
from services.provider.adapters.errors import SdkErrors, classify, stream_error
from services.provider.adapters.names import ToolNames
from services.provider.adapters.sse import SseDecoder
from services.provider.adapters.wire import EMPTY, Json, as_object, event_object, get_int, get_list, get_object, get_str
from steward.common.v1 import content_pb2, usage_pb2
from steward.provider.v1 import provider_service_pb2 as pb

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import (
        ChatCompletionAssistantMessageParam,
        ChatCompletionFunctionToolParam,
        ChatCompletionMessageFunctionToolCallParam,
        ChatCompletionMessageParam,
    )
    from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The SDK refuses to build a client without a key; local servers (Ollama, llama.cpp) take none.
NO_KEY = "no-key"

_FINISH_REASONS: dict[str, pb.StopReason.ValueType] = {
    "stop": pb.STOP_REASON_END_TURN,
    "tool_calls": pb.STOP_REASON_TOOL_USE,
    "function_call": pb.STOP_REASON_TOOL_USE,
    "length": pb.STOP_REASON_MAX_TOKENS,
    "content_filter": pb.STOP_REASON_CONTENT_FILTER,
}


def is_official(base_url: str | None) -> bool:
    """Whether the base URL is OpenAI's own API (which knows the newer request fields)."""
    return base_url is None or base_url.rstrip("/") == DEFAULT_BASE_URL


def sdk_errors() -> SdkErrors:
    """The openai SDK's exception classes (imports the SDK)."""
    import openai

    return SdkErrors(
        base=openai.OpenAIError,
        api=openai.APIError,
        status=openai.APIStatusError,
        validation=openai.APIResponseValidationError,
        connection=openai.APIConnectionError,
        timeout=openai.APITimeoutError,
    )


class OpenAIAdapter:
    """Streams calls to OpenAI or an OpenAI-compatible server, one cached SDK client per (URL, key)."""

    def __init__(self, *, connect_timeout: float = 10.0, read_timeout: float = 120.0, max_clients: int = 32) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._clients: SdkClients[AsyncOpenAI] = SdkClients("openai", DEFAULT_BASE_URL, self._build, max_clients)

    def _build(self, base_url: str, api_key: str) -> AsyncOpenAI:
        import openai

        # Explicit api_key and base_url: the SDK would otherwise read them (and more) from the environment.
        return openai.AsyncOpenAI(
            api_key=api_key or NO_KEY,
            base_url=base_url,
            max_retries=0,
            timeout=openai.Timeout(self._read_timeout, connect=self._connect_timeout),
            http_client=openai.DefaultAioHttpClient(),
        )

    async def warm_up(self) -> None:
        """Import the SDK in a worker thread, so that the first call does not block the event loop on it."""
        await self._clients.warm_up()

    async def aclose(self) -> None:
        """Close every cached client."""
        await self._clients.aclose()

    async def stream(self, upstream: Upstream, api_key: str, call: GenerateCall) -> AsyncIterator[pb.GenerateResponse]:
        import openai

        sdk = sdk_errors()
        names = ToolNames(tool.name for tool in call.tools)
        body = request_body(call, names, official=is_official(upstream.base_url))
        started = False
        try:
            client = self._clients.get(upstream.base_url, api_key)
            # The SDK sends the request and raises for an error status; the streamed body is read here (sse.py),
            # one batch of events per read.
            stream = await client.post(
                "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=openai.AsyncStream[object]
            )
            started = True
            yield accepted()
            decoder = SseDecoder()
            translator = ChunkTranslator(names)
            async with stream:
                done = False
                async for data in stream.response.aiter_bytes():
                    out: list[pb.GenerateResponse] = []
                    try:
                        for event in decoder.feed(data):
                            if event.data.startswith("[DONE]"):
                                done = True
                                break
                            chunk = event_object(json.loads(event.data))
                            if chunk.get("error"):
                                raise stream_error(chunk["error"], api_key)
                            out += translator.feed(chunk)
                    finally:  # what came before a bad event still goes out, before its error
                        for merged in merge_deltas(out):
                            yield merged
                    if done:
                        break
            for closing in translator.finish():
                yield closing
        except Exception as exc:
            error = classify(exc, sdk, api_key=api_key, streaming=started)
            if error is None or error is exc:
                raise
            raise error from exc


def request_body(call: GenerateCall, names: ToolNames, *, official: bool) -> CompletionCreateParamsStreaming:
    """The Chat Completions request for a call, as `chat.completions.create(stream=True)` would send it."""
    body: CompletionCreateParamsStreaming = {
        "model": call.model,
        "messages": translate_messages(call, names),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if official:
        body["max_completion_tokens"] = call.max_tokens
        if call.cache_key:
            body["prompt_cache_key"] = call.cache_key
    else:
        body["max_tokens"] = call.max_tokens
    if call.temperature is not None:
        body["temperature"] = call.temperature
    effort = reasoning_effort(call.reasoning_budget_tokens, call.max_tokens)
    if effort is not None:
        body["reasoning_effort"] = effort
    if call.stop_sequences:
        body["stop"] = list(call.stop_sequences)
    tools = translate_tools(call, names)
    if tools:
        body["tools"] = tools
    return body


def reasoning_effort(budget: int, max_tokens: int) -> Literal["low", "medium", "high"] | None:
    """Chat Completions' `reasoning_effort` for a reasoning budget: by its share of max_tokens (the runtime asks a
    quarter, a half or three quarters for low, medium, high); None for no budget."""
    if budget <= 0:
        return None
    share = budget / max(1, max_tokens)
    return "low" if share < 0.375 else "medium" if share < 0.625 else "high"


def _texts(message: content_pb2.ChatMessage) -> str:
    return "\n".join(b.text.text for b in message.content if b.WhichOneof("block") == "text" and b.text.text)


def translate_messages(call: GenerateCall, names: ToolNames) -> list[ChatCompletionMessageParam]:
    """The system prompt first, then the conversation; a tool message becomes one `tool` message per result."""
    system_texts = [call.system] if call.system else []
    system_texts += [_texts(m) for m in call.messages if m.role == content_pb2.ROLE_SYSTEM]
    system_text = "\n\n".join(t for t in system_texts if t)
    messages: list[ChatCompletionMessageParam] = []
    if system_text:
        messages.append({"role": "system", "content": system_text})
    for message in call.messages:
        text = _texts(message)
        if message.role == content_pb2.ROLE_SYSTEM:
            continue
        if message.role == content_pb2.ROLE_ASSISTANT:
            tool_calls: list[ChatCompletionMessageFunctionToolCallParam] = [
                {
                    "id": b.tool_call.id,
                    "type": "function",
                    "function": {"name": names.wire(b.tool_call.name), "arguments": b.tool_call.arguments_json or "{}"},
                }
                for b in message.content
                if b.WhichOneof("block") == "tool_call"
            ]
            if not text and not tool_calls:
                continue  # reasoning only
            assistant: ChatCompletionAssistantMessageParam = {"role": "assistant", "content": text or None}
            if tool_calls:
                assistant["tool_calls"] = tool_calls
            messages.append(assistant)
            continue
        for block in message.content:
            if block.WhichOneof("block") == "tool_result":
                result = block.tool_result
                # Chat Completions has no error flag on a tool result: say it in the content.
                content = f"ERROR: {result.content}" if result.is_error else result.content
                messages.append({"role": "tool", "tool_call_id": result.tool_call_id, "content": content})
        if text:
            messages.append({"role": "user", "content": text})
    return messages


def translate_tools(call: GenerateCall, names: ToolNames) -> list[ChatCompletionFunctionToolParam]:
    tools: list[ChatCompletionFunctionToolParam] = []
    for tool in call.tools:
        try:
            schema = json.loads(tool.input_schema_json) if tool.input_schema_json.strip() else {"type": "object"}
        except ValueError as exc:
            message = f"tool {tool.name!r} has an invalid input schema"
            raise UpstreamError("BAD_REQUEST", message, transient=False) from exc
        if not isinstance(schema, dict):
            raise UpstreamError("BAD_REQUEST", f"tool {tool.name!r} has a non-object input schema", transient=False)
        function: ChatCompletionFunctionToolParam = {
            "type": "function",
            "function": {"name": names.wire(tool.name), "parameters": schema},
        }
        if tool.description:
            function["function"]["description"] = tool.description
        tools.append(function)
    return tools


@dataclass
class _ToolSlot:
    index: int  # ours: the call's position in this answer
    id: str = ""
    name: str = ""
    started: bool = False
    finished: bool = False
    any_arguments: bool = False
    pending: list[str] = field(default_factory=list)  # argument fragments that came before the name


class ChunkTranslator:
    """Chat completion chunks → normalized events, for one answer (choice 0)."""

    def __init__(self, names: ToolNames) -> None:
        self._names = names
        self._slots: dict[int, _ToolSlot] = {}  # the upstream's tool call index → slot
        self._last_key: int | None = None
        self._usage = usage_pb2.Usage()
        self._usage_seen = False
        self.finish_reason: str | None = None

    def feed(self, chunk: Json) -> list[pb.GenerateResponse]:
        out: list[pb.GenerateResponse] = []
        for choice in get_list(chunk, "choices"):
            choice = as_object(choice)
            if choice.get("index") not in (0, None):  # one answer asked for; some servers leave out the index
                continue
            delta = get_object(choice, "delta")
            if delta is not None and self.finish_reason is None:
                # vLLM, Ollama, DeepSeek and others stream reasoning in a non-standard field.
                reasoning = get_str(delta, "reasoning_content") or get_str(delta, "reasoning")
                if reasoning:
                    out.append(pb.GenerateResponse(reasoning_delta=pb.ReasoningDelta(text=reasoning)))
                for text in (get_str(delta, "content"), get_str(delta, "refusal")):
                    if text:
                        out.append(pb.GenerateResponse(text_delta=pb.TextDelta(text=text)))
                for tool_call in get_list(delta, "tool_calls"):
                    tool_call = as_object(tool_call)
                    function = get_object(tool_call, "function") or EMPTY
                    out += self._tool_fragment(
                        get_int(tool_call, "index"),
                        get_str(tool_call, "id"),
                        get_str(function, "name"),
                        get_str(function, "arguments"),
                    )
            finish_reason = get_str(choice, "finish_reason")
            if finish_reason and self.finish_reason is None:
                self.finish_reason = finish_reason
                out += self._close_tools()
        usage = get_object(chunk, "usage")
        if usage is not None:
            details = get_object(usage, "prompt_tokens_details") or EMPTY
            cached = get_int(details, "cached_tokens") or 0
            written = get_int(details, "cache_write_tokens") or 0
            self._usage.input_tokens = max(0, (get_int(usage, "prompt_tokens") or 0) - cached - written)
            self._usage.cache_read_input_tokens = cached
            self._usage.cache_write_input_tokens = written
            self._usage.output_tokens = get_int(usage, "completion_tokens") or 0
            self._usage_seen = True
            out.append(self._usage_event())
        return out

    def finish(self) -> list[pb.GenerateResponse]:
        """The closing events once the stream ended; raises STREAM_CUT if no finish reason came."""
        if self.finish_reason is None:
            raise UpstreamError("STREAM_CUT", "the stream ended without a finish_reason", transient=True)
        out: list[pb.GenerateResponse] = []
        if not self._usage_seen:
            out.append(self._usage_event())  # a server that ignores include_usage: report zero, not nothing
        reason = _FINISH_REASONS.get(self.finish_reason, pb.STOP_REASON_END_TURN)
        if reason == pb.STOP_REASON_END_TURN and self._slots:
            reason = pb.STOP_REASON_TOOL_USE  # some compatible servers say "stop" after tool calls
        out.append(pb.GenerateResponse(finished=pb.GenerateFinished(stop_reason=reason)))
        return out

    def _usage_event(self) -> pb.GenerateResponse:
        usage = usage_pb2.Usage()
        usage.CopyFrom(self._usage)
        return pb.GenerateResponse(usage=usage)

    def _tool_fragment(
        self, key: int | None, call_id: str | None, name: str | None, arguments: str | None
    ) -> list[pb.GenerateResponse]:
        if not isinstance(key, int):  # a server that leaves out `index`: a new id opens a new call
            key = self._last_key if (call_id is None and self._last_key is not None) else len(self._slots)
        self._last_key = key
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _ToolSlot(index=len(self._slots))
        if slot.finished:
            return []
        out: list[pb.GenerateResponse] = []
        if call_id and not slot.id:
            slot.id = call_id
        if name and not slot.name:
            slot.name = name
        if not slot.started and slot.name:
            out.append(self._start(slot))
        if arguments:
            slot.any_arguments = True
            if slot.started:
                out.append(self._arguments(slot, arguments))
            else:
                slot.pending.append(arguments)
        return out

    def _start(self, slot: _ToolSlot) -> pb.GenerateResponse:
        slot.started = True
        call_id = slot.id or f"call_{uuid.uuid4().hex[:24]}"  # some local servers send no id
        started = pb.ToolCallStarted(index=slot.index, id=call_id, name=self._names.name(slot.name))
        return pb.GenerateResponse(tool_call_started=started)

    def _arguments(self, slot: _ToolSlot, text: str) -> pb.GenerateResponse:
        delta = pb.ToolCallArgumentsDelta(index=slot.index, arguments_json_delta=text)
        return pb.GenerateResponse(tool_call_arguments_delta=delta)

    def _close_tools(self) -> list[pb.GenerateResponse]:
        out: list[pb.GenerateResponse] = []
        for slot in self._slots.values():
            if slot.finished:
                continue
            if not slot.started:
                out.append(self._start(slot))
            for text in slot.pending:
                out.append(self._arguments(slot, text))
            slot.pending.clear()
            if not slot.any_arguments:
                out.append(self._arguments(slot, "{}"))  # so that the fragments always make a JSON object
            slot.finished = True
            out.append(pb.GenerateResponse(tool_call_finished=pb.ToolCallFinished(index=slot.index)))
        return out
