"""OpenAI's JSON objects: models, chat completions, chunks and usage."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.run_log import End, Piece, Restarted, Text, ToolCall, ToolCallDelta, Usage


def model_json(model_id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def tool_calls_json(calls: list[ToolCall], *, indexed: bool) -> list[dict[str, Any]]:
    out = []
    for index, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        if indexed:
            item["index"] = index
        out.append(item)
    return out


@dataclass
class _Streamed:
    """A client tool call whose arguments a stream has sent pieces of."""

    index: int  # its place in the stream's `tool_calls` chunks
    step: int
    arguments: str = ""  # what was sent of its arguments


def with_note(text: str, note: str) -> str:
    return f"{text}\n\n{note}" if text and note else text or note


@dataclass
class Answer:
    """A completion as it is put together from a run's pieces. The text of a step that was restarted is
    dropped (`Restarted`): the answer holds the redone step's text only."""

    completion_id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    texts: list[Text] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    end: End | None = None
    streamed_text: bool = False  # whether a chunk with text was streamed (text sent cannot be unsent)
    streamed_calls: dict[str, _Streamed] = field(default_factory=dict)  # client tool calls streamed, by id
    call_indexes: int = 0  # the `index` the next streamed tool call gets

    @property
    def text(self) -> str:
        return "".join(piece.text for piece in self.texts)

    def add(self, piece: Piece) -> None:
        if isinstance(piece, Text):
            self.texts.append(piece)
        elif isinstance(piece, Restarted):
            self.texts = [text for text in self.texts if text.step != piece.step]
        elif isinstance(piece, Usage):
            self.input_tokens += piece.input_tokens
            self.output_tokens += piece.output_tokens
            self.cached_tokens += piece.cached_tokens
        elif isinstance(piece, End):
            self.end = piece

    def usage_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    def completion_json(self) -> dict[str, Any]:
        end = self.end or End("stop")
        message: dict[str, Any] = {"role": "assistant", "content": with_note(self.text, end.note) or None}
        message["refusal"] = None
        if end.tool_calls:
            message["tool_calls"] = tool_calls_json(end.tool_calls, indexed=False)
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "finish_reason": end.finish_reason, "logprobs": None}],
            "usage": self.usage_json(),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

    def usage_chunk(self) -> dict[str, Any]:
        return self._chunk([], usage=self.usage_json())

    def _chunk(self, choices: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            **more,
        }

    def chunks_for(self, piece: Piece) -> list[dict[str, Any]]:
        """The chunks that stream `piece` (and take it into the answer). A restarted step's text was sent
        already: the stream goes on with the redone step's text after it. A client tool call's arguments stream as
        they come, as OpenAI's `tool_calls` chunks (`_call_delta`); the end sends what is left of each call."""
        self.add(piece)
        if isinstance(piece, Text):
            if not piece.text:
                return []
            self.streamed_text = True
            return [self.chunk({"content": piece.text})]
        if isinstance(piece, ToolCallDelta):
            return [self._call_delta(piece)]
        if isinstance(piece, Restarted):
            # A redone step's calls come again (maybe with the same ids): they stream as new calls.
            self.streamed_calls = {k: v for k, v in self.streamed_calls.items() if v.step != piece.step}
        if not isinstance(piece, End):
            return []
        out = []
        if piece.note:
            out.append(self.chunk({"content": ("\n\n" if self.streamed_text else "") + piece.note}))
        rest = self._rest_of_calls(piece.tool_calls)
        if rest:
            out.append(self.chunk({"tool_calls": rest}))
        out.append(self.chunk({}, piece.finish_reason))
        return out

    def _call_delta(self, piece: ToolCallDelta) -> dict[str, Any]:
        """A `tool_calls` chunk for a piece of a call's arguments: the call's first one names it (id, type, name),
        later ones carry only its index and the arguments' next piece, as OpenAI streams them."""
        streamed = self.streamed_calls.get(piece.id)
        if streamed is None:
            streamed = self.streamed_calls[piece.id] = _Streamed(self.call_indexes, piece.step)
            self.call_indexes += 1
            item: dict[str, Any] = {
                "index": streamed.index,
                "id": piece.id,
                "type": "function",
                "function": {"name": piece.name, "arguments": piece.arguments},
            }
        else:
            item = {"index": streamed.index, "function": {"arguments": piece.arguments}}
        streamed.arguments += piece.arguments
        return self.chunk({"tool_calls": [item]})

    def _rest_of_calls(self, calls: list[ToolCall]) -> list[dict[str, Any]]:
        """The `tool_calls` of the last chunk: what was not streamed yet of each call the run waits for (all of a
        call whose pieces were not streamed)."""
        out: list[dict[str, Any]] = []
        for call in calls:
            streamed = self.streamed_calls.get(call.id)
            if streamed is not None and call.arguments.startswith(streamed.arguments):
                rest = call.arguments[len(streamed.arguments) :]
                if rest:
                    out.append({"index": streamed.index, "function": {"arguments": rest}})
                continue
            (item,) = tool_calls_json([call], indexed=True)
            item["index"] = self.call_indexes
            self.call_indexes += 1
            out.append(item)
        return out


def event_data(body: dict[str, Any]) -> str:
    """A chunk (or an error) as the data of one SSE event: JSON on one line."""
    return json.dumps(body, ensure_ascii=False)


DONE = "[DONE]"  # the data of the stream's last event
