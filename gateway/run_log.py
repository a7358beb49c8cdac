"""A run's event log (the store's StreamRunEvents) read as pieces of an answer: the reader every surface uses.

The pieces are shaped after a chat completion, the richest answer a surface gives; the OpenAI-compatible API
and MCP each take what they show from them.

text_delta → text (with its step), or, for a piece of a client tool's arguments (a text delta with `tool_call`
set), a `ToolCallDelta` (the agent's own tools are Steward's business, not the caller's); usage → usage; a pause
or the run's end → the `End` with its finish reason, only ever one of OpenAI's: completed → "stop" ("length"
when the model stopped at its max tokens, "content_filter" when a filter stopped it), incomplete → "length",
paused for client tools → "tool_calls" (with the calls), paused for a confirmation → "stop" with a notice saying
what waits for whose decision where, expired (its pause deadline passed, ADR 0018) → "stop"
with a note saying what it waited for, and failed / cancelled → "stop" with a note saying so (the
reader knows from the note, and from the run, that there is no answer). Tool calls starting and ending are
`Activity` (for readers that show progress; a completion ignores them).

**A restarted step** (`step_restarted`: the runtime redoes a step whose model stream broke, or that a crashed
replica left unfinished) is a `Restarted` piece, after the abandoned text and before the redone step's text.
Readers drop that step's text so far: an answer put together from the pieces (the OpenAI API's non-streamed
completion, MCP's chat and decide_confirmation) holds only the redone step's text, as
`logged_answer` and the conversation's stored message do. Text already streamed cannot be taken back: a
streamed completion goes on with the redone step's text after what it sent (see `openai_api.routes`).

A continuation reads the log from its start and emits only what follows a point: the results it
submitted, or the decisions on the confirmations an earlier answer named. So a repeated follow-up
gets the same answer again, and what came before (already answered) is never sent twice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from gateway import run_notices as notices
from gateway.app_keys import Clients
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

CLIENT_PREFIX = "client."  # the runtime's qualifier of a client tool's name: "client.<name>"


def call_id_for(run_id: str, call_id: str) -> str:
    """The id a client answers a client tool call with: it carries the run, so a follow-up finds the run from it
    alone."""
    return f"call_{run_id}_{call_id}"


def run_of_call_id(value: str) -> tuple[str, str] | None:
    """(run id, the run's own call id) from an id `call_id_for` made; None for any other id."""
    if not value.startswith("call_") or len(value) < 43 or value[41] != "_":
        return None
    try:
        run_id = str(uuid.UUID(value[5:41]))
    except ValueError:
        return None
    return (run_id, value[42:]) if run_id == value[5:41] else None


@dataclass(frozen=True)
class Text:
    text: str
    step: int = 0  # the step (model call) that said it


@dataclass(frozen=True)
class Restarted:
    """The step is being redone: drop the text it said so far."""

    step: int


@dataclass(frozen=True)
class Activity:
    """A tool call started, finished or failed (a sign of life while no text comes)."""

    tool_name: str
    state: str  # "started", "finished" or "failed"


@dataclass(frozen=True)
class ToolCall:
    id: str  # call_id_for(run, call): what the client answers with
    name: str  # as the client named the tool
    arguments: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a client tool call's arguments, as the model writes them (before the run pauses for it)."""

    id: str  # call_id_for(run, call), as the call's later `ToolCall`
    name: str  # as the client named the tool
    arguments: str  # the next piece of the arguments' JSON text (may be empty in a call's first piece)
    step: int = 0


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class End:
    finish_reason: str
    note: str = ""  # text for the person, after the model's (a confirmation notice, a failure)
    tool_calls: list[ToolCall] = field(default_factory=list)


Piece = Text | ToolCallDelta | Usage | End | Restarted | Activity


@dataclass
class _Log:
    """What the log said so far, whether or not it is emitted."""

    run_id: str
    client_calls: dict[str, ToolCall] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    confirmations: dict[str, run_event_pb2.ConfirmationRequested] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)
    tool_names: dict[str, str] = field(default_factory=dict)  # tool call id -> tool name

    def see(self, event: run_event_pb2.RunEvent) -> None:
        kind = event.WhichOneof("payload")
        if kind == "client_tool_requested":
            call = event.client_tool_requested
            name = call.tool_name.removeprefix(CLIENT_PREFIX)
            self.client_calls[call.tool_call_id] = ToolCall(
                call_id_for(self.run_id, call.tool_call_id), name, call.arguments_json
            )
        elif kind == "tool_call_started":
            self.tool_names[event.tool_call_started.tool_call_id] = event.tool_call_started.tool_name
        elif kind == "tool_call_finished":
            self.answered.add(event.tool_call_finished.tool_call_id)
        elif kind == "tool_call_failed":
            self.answered.add(event.tool_call_failed.tool_call_id)
        elif kind == "confirmation_requested":
            self.confirmations[event.confirmation_requested.confirmation_id] = event.confirmation_requested
        elif kind == "confirmation_decided":
            self.decided.add(event.confirmation_decided.confirmation_id)

    def pause(self, reason: int) -> End:
        if reason == run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL:
            calls = [call for call_id, call in self.client_calls.items() if call_id not in self.answered]
            return End("tool_calls", tool_calls=calls)
        pending = [c for c_id, c in self.confirmations.items() if c_id not in self.decided]
        return End("stop", note=notices.confirmation_notice(self.run_id, pending))


_COMPLETED_FINISH = {run_pb2.STOP_REASON_MAX_TOKENS: "length", run_pb2.STOP_REASON_CONTENT_FILTER: "content_filter"}


def _end(event: run_event_pb2.RunEvent) -> End | None:
    kind = event.WhichOneof("payload")
    if kind == "run_completed":
        return End(_COMPLETED_FINISH.get(event.run_completed.stop_reason, "stop"))
    if kind == "run_incomplete":
        reason = run_pb2.IncompleteReason.Name(event.run_incomplete.reason).removeprefix("INCOMPLETE_REASON_").lower()
        return End("length", note=notices.incomplete_note(reason))
    if kind == "run_failed":
        error = event.run_failed.error
        return End("stop", note=notices.failure_note(error.reason, error.message))
    if kind == "run_cancelled":
        return End("stop", note=notices.CANCELLED)
    if kind == "run_expired":
        # The run ended without an error of its own: what it said stands, and the note says why nothing follows.
        return End("stop", note=notices.expired_note(event.run_expired))
    return None


_ACTIVITY = {"tool_call_started": "started", "tool_call_finished": "finished", "tool_call_failed": "failed"}

Start = Callable[[_Log], bool]  # whether the emitted part of the log has begun


def from_start(log: _Log) -> bool:
    return True


def after_results(call_ids: set[str]) -> Start:
    return lambda log: call_ids <= log.answered


def after_decisions(confirmation_ids: frozenset[str]) -> Start:
    return lambda log: confirmation_ids <= log.decided


async def pieces(clients: Clients, run: run_pb2.Run, start: Start = from_start) -> AsyncGenerator[Piece, None]:
    """The run's pieces from `start` to its next pause or its end; the last piece is always an End."""
    log = _Log(run.id)
    emitting = False
    last_pause: End | None = None
    after = 0
    follow = run.state != run_pb2.RUN_STATE_PAUSED  # a paused run does not move: its log is complete
    while True:
        call = clients.runs.StreamRunEvents(
            store_pb.StreamRunEventsRequest(run_id=run.id, after_seq=after, follow=follow)
        )
        try:
            async for item in call:
                event = item.event
                after = event.seq
                log.see(event)
                kind = event.WhichOneof("payload")
                end = _end(event)
                if not emitting:
                    if kind == "run_paused":
                        last_pause = log.pause(event.run_paused.reason)
                    emitting = start(log) or end is not None
                    if end is None:
                        continue
                if end is not None:
                    yield end
                    return
                if kind == "text_delta" and event.text_delta.HasField("tool_call"):
                    delta = event.text_delta.tool_call
                    if delta.tool_name.startswith(CLIENT_PREFIX):
                        yield ToolCallDelta(
                            call_id_for(run.id, delta.tool_call_id),
                            delta.tool_name.removeprefix(CLIENT_PREFIX),
                            delta.arguments_json_delta,
                            event.step,
                        )
                elif kind == "text_delta":
                    yield Text(event.text_delta.text, event.step)
                elif kind == "step_restarted":
                    yield Restarted(event.step)
                elif kind in _ACTIVITY:
                    call_id = getattr(event, kind).tool_call_id
                    yield Activity(log.tool_names.get(call_id, ""), _ACTIVITY[kind])
                elif kind == "usage":
                    usage = event.usage.usage
                    yield Usage(
                        usage.input_tokens + usage.cache_read_input_tokens + usage.cache_write_input_tokens,
                        usage.output_tokens,
                        usage.cache_read_input_tokens,
                    )
                elif kind == "run_paused":
                    yield log.pause(event.run_paused.reason)
                    return
        finally:
            call.cancel()
        if emitting and not follow:  # the run moved on after it was read as paused: follow it
            follow = True
            continue
        yield last_pause if last_pause is not None and not emitting else End("stop", note=notices.LOG_ENDED)
        return
