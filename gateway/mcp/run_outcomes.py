"""What chat, decide_confirmation and get_run answer about a run, read from its event log with the reader every
surface uses (`gateway.run_log`).

`follow` reads a run's log from a point (its start, or just after a decision) to the run's next pause or its
end, and answers with what the run said, its state, and the confirmations it waits for. While it reads, and
when the client asked for progress, each text delta, each tool call starting or ending, and each restarted step
is a progress notification (a restarted step's text so far is dropped from the answer). A run
that neither pauses nor ends within `mcp_wait_seconds` is answered as still running, with its ids and the
advice to call `get_run` later: the run goes on (disconnect, or waiting less, is never cancel).

A run that failed, was cancelled or expired is answered with `isError: true` (the tool call did not get the
agent's answer); a failed run's `error` carries the run's own stable reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from gateway import presenters, run_log
from gateway.mcp.tooling import Answer, Call
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.errors import Reason, StewardError
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

MOVING = frozenset({run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_RUNNING})
ENDED_BADLY = frozenset({run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED, run_pb2.RUN_STATE_EXPIRED})


def confirmation_data(confirmation: confirmation_pb2.Confirmation) -> dict[str, Any]:
    """A confirmation as the HTTP API shows it, and for a pending one, the tool call that decides it."""
    data = presenters.confirmation_json(confirmation)
    if confirmation.state == confirmation_pb2.CONFIRMATION_STATE_PENDING:
        data["decide_with"] = {
            "tool": "decide_confirmation",
            "arguments": {"confirmation_id": confirmation.id, "outcome": "approve or reject"},
        }
    return data


async def pending_confirmations(call: Call, run_id: str) -> list[confirmation_pb2.Confirmation]:
    reply = await call.clients.confirm.ListConfirmations(
        confirm_pb.ListConfirmationsRequest(run_id=run_id, page_size=200), timeout=call.timeout
    )
    return list(reply.confirmations)


async def read_run(call: Call, run_id: str) -> run_pb2.Run:
    return (await call.clients.runs.GetRun(store_pb.GetRunRequest(id=run_id), timeout=call.timeout)).run


def notice(pending: list[confirmation_pb2.Confirmation]) -> str:
    """What waits for a person's decision, in plain words, and how to give it over MCP."""
    parts = []
    for confirmation in pending:
        arguments = json.dumps(presenters.confirmation_json(confirmation)["arguments"], ensure_ascii=False)
        lines = [f"The agent wants to call `{confirmation.tool_name}` with {arguments}."]
        if confirmation.preview.content:
            title = confirmation.preview.title
            lines.append(f"Preview ({title}):\n" if title else "Preview:\n")
            lines[-1] += confirmation.preview.content
        until = presenters.time_json(confirmation.expire_time)
        lines.append(
            f"It waits for a person's decision on confirmation `{confirmation.id}`: ask them, then call "
            '`decide_confirmation` with that confirmation_id and outcome "approve" or "reject" (and an optional '
            "reason)" + (f", before {until}." if until else ".")
        )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def started(run: run_pb2.Run) -> str:
    """The progress message sent as soon as a run exists: its ids, so a client that gives up waiting can find it."""
    return (
        f"[Steward: run `{run.id}` started in conversation `{run.conversation_id}`. If this call ends before the "
        f"run does, call get_run with run_id `{run.id}` for its answer.]"
    )


def _activity(piece: run_log.Activity) -> str:
    return f"[Steward: tool `{piece.tool_name or 'unknown'}` {piece.state}.]"


def _restarted(piece: run_log.Restarted) -> str:
    return f"[Steward: step {piece.step} is being redone; its text so far is dropped from the answer.]"


@dataclass(frozen=True)
class Outcome:
    run: run_pb2.Run
    text: str  # what the run said from the point read (a restarted step's abandoned text left out)
    note: str  # why it ended short of an answer (a failure, a limit), if it did
    pending: list[confirmation_pb2.Confirmation]
    still_moving: bool  # the wait ran out before the run paused or ended


async def follow(call: Call, run: run_pb2.Run, start: run_log.Start) -> Outcome:
    """Read `run`'s log from `start` to its next pause or end (at most `mcp_wait_seconds`)."""
    texts: list[run_log.Text] = []
    note = ""
    still_moving = False
    try:
        async with asyncio.timeout(call.settings.mcp_wait_seconds):
            async with contextlib.aclosing(run_log.pieces(call.clients, run, start)) as pieces:
                async for piece in pieces:
                    if isinstance(piece, run_log.Text) and piece.text:
                        texts.append(piece)
                        await call.progress(piece.text)
                    elif isinstance(piece, run_log.Restarted):
                        texts = [text for text in texts if text.step != piece.step]
                        await call.progress(_restarted(piece))
                    elif isinstance(piece, run_log.Activity):
                        await call.progress(_activity(piece))
                    elif isinstance(piece, run_log.End):
                        note = piece.note
    except TimeoutError:
        still_moving = True
    current = await read_run(call, run.id)
    pending = await pending_confirmations(call, run.id)
    if pending:
        note = ""  # the reader's pause notice names HTTP routes; `notice` says how to decide over MCP
    return Outcome(current, "".join(text.text for text in texts), note, pending, still_moving)


def run_data(run: run_pb2.Run) -> dict[str, Any]:
    shown = presenters.run_json(run)
    return {
        "run_id": run.id,
        "conversation_id": run.conversation_id,
        "agent_id": run.agent_id or None,
        "state": shown["state"],
        "pause_reason": shown["pause_reason"],
    }


def outcome_answer(outcome: Outcome, **extra: Any) -> Answer:
    run = outcome.run
    data: dict[str, Any] = {
        **extra,
        **run_data(run),
        "answer": outcome.text,
        "note": outcome.note or None,
        "pending_confirmations": [confirmation_data(c) for c in outcome.pending],
        "usage": presenters.usage_json(run.usage),
        "still_running": outcome.still_moving,
    }
    if run.state == run_pb2.RUN_STATE_FAILED and run.HasField("error"):
        data["error"] = {"reason": run.error.reason, "message": run.error.message, "transient": run.error.transient}
    parts = [outcome.text, outcome.note, notice(outcome.pending)]
    if outcome.still_moving and not outcome.pending:
        parts.append(
            f"[Steward: run `{run.id}` (conversation `{run.conversation_id}`) is still {data['state']}; it goes on "
            f"without this call. Call `get_run` with run_id `{run.id}` later for its answer.]"
        )
    return Answer(data, "\n\n".join(part for part in parts if part), error=run.state in ENDED_BADLY)


async def logged_answer(call: Call, run: run_pb2.Run) -> str | None:
    """Everything a paused or ended run said (every step's text, across its pauses), from its log; text of a step
    redone after a crash is dropped with `step_restarted`. None for a run still moving, or a compacted log."""
    if run.state in MOVING:
        return None
    texts: dict[int, list[str]] = {}
    stream = call.clients.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run.id, follow=False))
    try:
        async with asyncio.timeout(call.settings.upstream_timeout):
            async for item in stream:
                event = item.event
                kind = event.WhichOneof("payload")
                if kind == "text_delta":
                    texts.setdefault(event.step, []).append(event.text_delta.text)
                elif kind == "step_restarted":
                    texts.pop(event.step, None)
    except TimeoutError:
        return None
    except StewardError as error:
        if error.reason == Reason.CURSOR_EXPIRED:
            return None
        raise
    finally:
        stream.cancel()
    return "".join(text for step in sorted(texts) for text in texts[step])
