"""Hooks: a small plugin interface around the loop, and the built-in audit log.

A hook sees every provider call and tool call before and after it, and every
run event as it is written (the event tap). Hooks observe; they cannot change
what the loop does, and a failing hook is logged, never fatal to the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from steward.store.v1 import run_event_pb2 as ev

log = structlog.get_logger(__name__)


class Hook:
    """Override what you need; every method does nothing by default."""

    async def before_model_call(self, run_id: str, step: int, model_route: str) -> None:
        return None

    async def after_model_call(self, run_id: str, step: int, tool_calls: int, error: str = "") -> None:
        return None

    async def before_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, confirmation_id: str) -> None:
        return None

    async def after_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, is_error: bool) -> None:
        return None

    async def on_event(self, run_id: str, event: ev.RunEvent) -> None:
        return None


class AuditLog(Hook):
    """Logs every model call, tool call and state-changing event (not deltas) as structured lines."""

    async def before_model_call(self, run_id: str, step: int, model_route: str) -> None:
        log.info("audit_model_call", run_id=run_id, step=step, model_route=model_route)

    async def after_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, is_error: bool) -> None:
        log.info("audit_tool_call", run_id=run_id, tool_call_id=tool_call_id, tool=tool_name, is_error=is_error)

    async def on_event(self, run_id: str, event: ev.RunEvent) -> None:
        kind = event.WhichOneof("payload")
        if kind not in ("text_delta", "reasoning_delta"):
            log.info("audit_run_event", run_id=run_id, kind=kind, seq=event.seq)


class Hooks:
    """Calls every hook in order; a hook's failure is logged and skipped."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self._hooks = list(hooks)

    async def _each(self, name: str, *args: object) -> None:
        for hook in self._hooks:
            try:
                await getattr(hook, name)(*args)
            except Exception:
                log.exception("hook_failed", hook=type(hook).__name__, method=name)

    async def before_model_call(self, run_id: str, step: int, model_route: str) -> None:
        await self._each("before_model_call", run_id, step, model_route)

    async def after_model_call(self, run_id: str, step: int, tool_calls: int, error: str = "") -> None:
        await self._each("after_model_call", run_id, step, tool_calls, error)

    async def before_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, confirmation_id: str) -> None:
        await self._each("before_tool_call", run_id, tool_call_id, tool_name, confirmation_id)

    async def after_tool_call(self, run_id: str, tool_call_id: str, tool_name: str, is_error: bool) -> None:
        await self._each("after_tool_call", run_id, tool_call_id, tool_name, is_error)

    async def on_event(self, run_id: str, event: ev.RunEvent) -> None:
        await self._each("on_event", run_id, event)
