"""A deployment's hook module: a policy for the notes tools, and a log line for every write's outcome.

Loaded with `STEWARD_HOOKS=audit,tests.runtime.hook_policy:policy` (docs/hooks.md shows this module as it is).
"""

from __future__ import annotations

import structlog

from services.runtime.hooks import Deny, Hook, StepInfo, ToolCall, ToolResult

log = structlog.get_logger(__name__)


class NotesPolicy(Hook):
    """Agents never delete notes, and never write a note whose title says it is confidential."""

    async def before_tool_call(self, step: StepInfo, call: ToolCall) -> Deny | None:
        if call.name == "notes.delete_note":
            return Deny("agents may not delete notes")
        title = call.arguments.get("title")
        if call.kind == "write" and isinstance(title, str) and "confidential" in title.lower():
            return Deny("confidential notes are kept out of the notes server")
        return None

    async def after_tool_call(self, step: StepInfo, call: ToolCall, result: ToolResult) -> None:
        if call.kind == "write":
            log.info(
                "notes_write",
                run_id=step.run.id,
                user_id=step.run.user_id,
                tool=call.name,
                is_error=result.is_error,
                reason=result.reason,  # "HOOK_DENIED" when a policy stopped it, "REJECTED" when a person did
            )


def policy() -> Hook:
    """The factory STEWARD_HOOKS names: called once, when the runtime starts."""
    return NotesPolicy()
