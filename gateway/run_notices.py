"""What an answer read from a run's log says, in plain words, where the run did not simply finish.

A run paused for a person's confirmation answers with what is proposed (tool, arguments, preview),
the confirmation's id and where to decide it. The notice names the run (`Steward run `<id>``) and each
confirmation (`confirmation `<id>``): when a client sends the conversation back with one more user
message, those marks are how the follow-up finds the same run and continues it (the OpenAI API's `requests.py`).
"""

from __future__ import annotations

import json

from steward.store.v1 import run_event_pb2, run_pb2

CANCELLED = "[Steward: the run was cancelled.]"
LOG_ENDED = "[Steward: the run's event log ended before the run did.]"


def _arguments(text: str) -> str:
    try:
        return json.dumps(json.loads(text or "{}"), ensure_ascii=False, sort_keys=True)
    except json.JSONDecodeError:
        return text


def confirmation_notice(run_id: str, pending: list[run_event_pb2.ConfirmationRequested]) -> str:
    if not pending:
        return f"[Steward: Steward run `{run_id}` is paused, waiting for a decision.]"
    parts = []
    for request in pending:
        lines = [
            f"The agent wants to call `{request.tool_name}` with {_arguments(request.arguments_json)}.",
            f"It waits for your decision on confirmation `{request.confirmation_id}`: approve or reject it with "
            f"`POST /api/v1/confirmations/{request.confirmation_id}/decision` "
            '(body `{"decision": {"outcome": "approve"}}` or `{"decision": {"outcome": "reject", "reason": "..."}}`)'
            + (f", before {request.expire_time.ToJsonString()}." if request.HasField("expire_time") else "."),
        ]
        if request.preview:
            heading = f"Preview ({request.preview_title})" if request.preview_title else "Preview"
            shown = f"```diff\n{request.preview}\n```" if request.preview_kind == "diff" else request.preview
            lines.insert(1, f"{heading}:\n{shown}")
        parts.append("\n".join(lines))
    footer = (
        f"(Steward run `{run_id}` is paused. Once you have decided, send any message here to get the rest of "
        "the run; its text is not passed to the agent.)"
    )
    return "\n\n".join([*parts, footer])


def expired_note(event: run_event_pb2.RunExpired) -> str:
    """What a run that expired at its pause deadline waited for, and that it has ended."""
    waited = {
        run_pb2.PAUSE_REASON_AWAITING_CONFIRMATION: "a decision on its confirmations",
        run_pb2.PAUSE_REASON_AWAITING_CLIENT_TOOL: "the results of its client tool calls",
    }.get(event.reason, "what it was paused for")
    when = f" ({event.expire_time.ToJsonString()})" if event.HasField("expire_time") else ""
    return f"[Steward: the run expired: it waited for {waited} past its pause deadline{when}, and has ended.]"


def incomplete_note(reason: str) -> str:
    return f"[Steward: the run stopped at a limit ({reason}).]"


def failure_note(reason: str, message: str) -> str:
    return f"[Steward: the run failed ({reason}): {message}]"
