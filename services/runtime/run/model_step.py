"""One model step: a Generate call streamed into the run's event log.

Text and reasoning deltas go to the log as they come (coalesced by the
EventWriter), and so do the pieces of tool calls' arguments (text deltas with
`tool_call` set: a first one, empty, when the call opens, then one per
fragment); tool calls are assembled from their fragments and logged whole
(`tool_call_started`) once their arguments are complete. What is still buffered when the stream ends
goes with the step's checkpoint.
Usage is summed over the provider's attempts (each attempt reports its own
cumulative usage). The first content event (text, reasoning or a tool call) must come within the
first-token limit of the call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.runtime.run.writer import EventWriter
from steward.common.v1 import content_pb2, usage_pb2
from steward.errors import StewardError
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.store.v1 import run_event_pb2 as ev

CONTENT_KINDS = frozenset({"text_delta", "reasoning_delta", "tool_call_started"})  # what lifts the first-token limit


@dataclass
class StepResult:
    message: content_pb2.ChatMessage  # the assistant message, tool calls included
    usage: usage_pb2.Usage
    stop_reason: provider_pb.StopReason.ValueType = provider_pb.STOP_REASON_UNSPECIFIED
    tool_calls: list[content_pb2.ToolCallBlock] = field(default_factory=list)
    capped: bool = False  # the step's max_tokens was set by a limit of the agent or run (steps.py `_ending`)


@dataclass
class Progress:
    """What one try of a step got so far: whether content reached the run's log (a restart must then tell readers
    to drop it)."""

    content: bool = False


def add_usage(total: usage_pb2.Usage, more: usage_pb2.Usage) -> None:
    total.input_tokens += more.input_tokens
    total.output_tokens += more.output_tokens
    total.cache_read_input_tokens += more.cache_read_input_tokens
    total.cache_write_input_tokens += more.cache_write_input_tokens
    total.cost_micros += more.cost_micros
    total.cost_unknown = total.cost_unknown or more.cost_unknown


class _Assembler:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.signature = ""
        self.calls: dict[int, content_pb2.ToolCallBlock] = {}
        self.arguments: dict[int, list[str]] = {}

    def message(self) -> content_pb2.ChatMessage:
        blocks: list[content_pb2.ContentBlock] = []
        if self.reasoning or self.signature:
            reasoning = content_pb2.ReasoningBlock(text="".join(self.reasoning), signature=self.signature)
            blocks.append(content_pb2.ContentBlock(reasoning=reasoning))
        if self.text:
            blocks.append(content_pb2.ContentBlock(text=content_pb2.TextBlock(text="".join(self.text))))
        blocks += [content_pb2.ContentBlock(tool_call=self.calls[index]) for index in sorted(self.calls)]
        return content_pb2.ChatMessage(role=content_pb2.ROLE_ASSISTANT, content=blocks)


async def run_step(
    provider: provider_grpc.ProviderServiceAsyncStub,
    request: provider_pb.GenerateRequest,
    writer: EventWriter,
    *,
    first_token_timeout: float,
    progress: Progress | None = None,
) -> StepResult:
    """Stream one Generate call; raises StewardError (from the provider) or TimeoutError (no content event, the
    first token, within `first_token_timeout` of the call: announcements and retries before it do not count)."""
    step = request.step
    parts = _Assembler()
    total = usage_pb2.Usage()
    attempt = usage_pb2.Usage()
    stop = provider_pb.STOP_REASON_UNSPECIFIED
    stream = provider.Generate(request)
    iterator = aiter(stream)
    try:
        # The first-token limit runs from the call to its first content event; it is lifted once one arrives.
        async with asyncio.timeout(first_token_timeout) as first_token:
            waiting = True
            chunk = await anext(iterator, None)
            while chunk is not None:
                kind = chunk.WhichOneof("event")
                if waiting and kind in CONTENT_KINDS:
                    first_token.reschedule(None)
                    waiting = False
                    if progress is not None:
                        progress.content = True
                if kind == "text_delta":
                    parts.text.append(chunk.text_delta.text)
                    writer.text(step, chunk.text_delta.text)
                elif kind == "reasoning_delta":
                    parts.reasoning.append(chunk.reasoning_delta.text)
                    parts.signature = chunk.reasoning_delta.signature or parts.signature
                    if chunk.reasoning_delta.text:
                        writer.reasoning(step, chunk.reasoning_delta.text)
                elif kind == "tool_call_started":
                    started = chunk.tool_call_started
                    parts.calls[started.index] = content_pb2.ToolCallBlock(id=started.id, name=started.name)
                    parts.arguments[started.index] = []
                    writer.tool_arguments(step, started.id, started.name, "")
                elif kind == "tool_call_arguments_delta":
                    piece = chunk.tool_call_arguments_delta
                    parts.arguments.setdefault(piece.index, []).append(piece.arguments_json_delta)
                    opened = parts.calls.get(piece.index)
                    if opened is not None and piece.arguments_json_delta:
                        writer.tool_arguments(step, opened.id, opened.name, piece.arguments_json_delta)
                elif kind == "tool_call_finished":
                    index = chunk.tool_call_finished.index
                    call = parts.calls.get(index)
                    if call is not None:
                        call.arguments_json = "".join(parts.arguments.get(index, []))
                        if not call.arguments_json:  # no arguments: "{}", and its pieces say so too
                            call.arguments_json = "{}"
                            writer.tool_arguments(step, call.id, call.name, call.arguments_json)
                        started_event = ev.ToolCallStarted(
                            tool_call_id=call.id, tool_name=call.name, arguments_json=call.arguments_json
                        )
                        writer.later(ev.RunEvent(step=step, tool_call_started=started_event))
                elif kind == "attempt_started":
                    add_usage(total, attempt)  # the previous attempt's usage stands; the new one starts at zero
                    attempt = usage_pb2.Usage()
                elif kind == "usage":
                    attempt.CopyFrom(chunk.usage)
                elif kind == "finished":
                    stop = chunk.finished.stop_reason
                chunk = await anext(iterator, None)
    finally:
        stream.cancel()
    add_usage(total, attempt)
    calls = [parts.calls[index] for index in sorted(parts.calls)]
    return StepResult(parts.message(), total, stop, calls)


class StepError(StewardError):
    """A model step's failure that ends the run: the provider's terminal error, or its transient one once the step
    was restarted as often as it may be (steps.py). It fails the run whatever its code, where a dependency away (the
    provider too, once it stayed away past the outage bound, or the store within the step) gives it back
    (`RunLoop._failure`)."""

    @classmethod
    def of(cls, error: StewardError) -> StepError:
        return cls(error.code, error.reason, error.message, metadata=error.metadata, domain=error.domain)
