"""Proto messages to the public JSON shapes of the HTTP API.

Enums become short lower-case names ("completed", "awaiting_confirmation"),
timestamps RFC 3339 strings, and tool arguments parsed JSON.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from steward.common.v1 import content_pb2, limits_pb2, usage_pb2
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2
from steward.store.v1 import agent_pb2, conversation_pb2, run_event_pb2, run_pb2


def time_json(value: Timestamp, present: bool = True) -> str | None:
    """A timestamp as RFC 3339 text; None when it is not set."""
    if not present or (value.seconds == 0 and value.nanos == 0):
        return None
    return value.ToJsonString()


def _enum(name: str, prefix: str) -> str | None:
    short = name.removeprefix(prefix).lower()
    return None if short == "unspecified" else short


def role_name(role: content_pb2.Role.ValueType) -> str | None:
    return _enum(content_pb2.Role.Name(role), "ROLE_")


def _arguments(text: str) -> Any:
    """Tool arguments as JSON; a model may emit invalid JSON, which is passed on as the raw text."""
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return text


def block_json(block: content_pb2.ContentBlock) -> dict[str, Any]:
    kind = block.WhichOneof("block")
    if kind == "text":
        return {"type": "text", "text": block.text.text}
    if kind == "reasoning":
        return {"type": "reasoning", "text": block.reasoning.text}
    if kind == "tool_call":
        call = block.tool_call
        return {
            "type": "tool_call",
            "id": call.id,
            "name": call.name,
            "arguments": json.loads(call.arguments_json or "{}"),
        }
    if kind == "tool_result":
        result = block.tool_result
        return {
            "type": "tool_result",
            "tool_call_id": result.tool_call_id,
            "content": result.content,
            "is_error": result.is_error,
        }
    return {"type": "unknown"}


def conversation_json(conversation: conversation_pb2.Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "agent_id": conversation.agent_id or None,
        "create_time": time_json(conversation.create_time),
        "update_time": time_json(conversation.update_time),
    }


def message_json(message: conversation_pb2.Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "role": role_name(message.role),
        "content": [block_json(block) for block in message.content],
        "run_id": message.run_id or None,
        "create_time": time_json(message.create_time),
    }


def _seconds(value: Duration) -> int | float | None:
    millis = value.ToMilliseconds()
    if millis == 0:
        return None
    return millis // 1000 if millis % 1000 == 0 else millis / 1000


def mode_name(mode: agent_pb2.RunMode.ValueType) -> str | None:
    return _enum(agent_pb2.RunMode.Name(mode), "RUN_MODE_")


def limits_json(limits: limits_pb2.RunLimits) -> dict[str, int | float | None]:
    """Every limit, null where unset (the next default applies); durations in seconds."""
    return {
        "max_steps": limits.max_steps or None,
        "max_tokens": limits.max_tokens or None,
        "max_cost_micros": limits.max_cost_micros or None,
        "timeout_seconds": _seconds(limits.timeout),
        "tool_timeout_seconds": _seconds(limits.tool_timeout),
        "first_token_timeout_seconds": _seconds(limits.first_token_timeout),
        "pause_timeout_seconds": _seconds(limits.pause_timeout),
    }


def tool_spec_json(spec: content_pb2.ToolSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "input_schema": _arguments(spec.input_schema_json)}


def model_params_json(params: agent_pb2.ModelParams) -> dict[str, Any]:
    """An agent's model parameters, null where unset (the deployment's default applies)."""
    effort = agent_pb2.ReasoningEffort.Name(params.reasoning_effort).removeprefix("REASONING_EFFORT_").lower()
    return {
        "temperature": params.temperature if params.HasField("temperature") else None,
        "max_output_tokens": params.max_output_tokens or None,
        "reasoning_effort": None if effort == "unspecified" else effort,
        "prompt_caching": params.prompt_caching if params.HasField("prompt_caching") else None,
    }


def agent_json(agent: agent_pb2.Agent) -> dict[str, Any]:
    policy = agent.approval_policy
    return {
        "id": agent.id,
        "name": agent.name,
        "description": agent.description,
        "system_prompt": agent.system_prompt,
        "model_route": agent.model_route,
        "tools": list(agent.tools),
        "approval_policy": {
            "mode": mode_name(policy.mode),
            "auto_approved_tools": list(policy.auto_approved_tools),
            "always_confirm_tools": list(policy.always_confirm_tools),
        },
        "limits": limits_json(agent.limits),
        "model_params": model_params_json(agent.model_params),
        "version": agent.version,
        "create_time": time_json(agent.create_time),
        "update_time": time_json(agent.update_time),
    }


def usage_json(usage: usage_pb2.Usage) -> dict[str, int | bool]:
    """Tokens and cost; `cost_unknown` says some tokens were on a model with no price (cost_micros leaves them out)."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_write_input_tokens": usage.cache_write_input_tokens,
        "cost_micros": usage.cost_micros,
        "cost_unknown": usage.cost_unknown,
    }


def run_json(run: run_pb2.Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "conversation_id": run.conversation_id,
        "agent_id": run.agent_id or None,
        "agent_version": run.agent_version or None,
        "state": _enum(run_pb2.RunState.Name(run.state), "RUN_STATE_"),
        "pause_reason": _enum(run_pb2.PauseReason.Name(run.pause_reason), "PAUSE_REASON_"),
        "incomplete_reason": _enum(run_pb2.IncompleteReason.Name(run.incomplete_reason), "INCOMPLETE_REASON_"),
        "error": (
            {"reason": run.error.reason, "message": run.error.message, "transient": run.error.transient}
            if run.HasField("error")
            else None
        ),
        "mode": mode_name(run.mode),
        "limits": limits_json(run.limits),
        "client_tools": [tool_spec_json(spec) for spec in run.client_tools],
        "step_count": run.step_count,
        "usage": usage_json(run.usage),
        "running_seconds": run.running_time.ToMilliseconds() / 1000,
        "stop_reason": stop_reason_name(run.stop_reason),
        "last_event_seq": run.last_event_seq,
        "cancel_requested": run.cancel_requested,
        "create_time": time_json(run.create_time),
        "update_time": time_json(run.update_time),
        "end_time": time_json(run.end_time, run.HasField("end_time")),
        "pause_expire_time": time_json(run.pause_expire_time, run.HasField("pause_expire_time")),
    }


def stop_reason_name(stop: run_pb2.StopReason.ValueType) -> str | None:
    """The stop reason's name: end_turn, tool_use, max_tokens, stop_sequence, content_filter; None when not known."""
    return _enum(run_pb2.StopReason.Name(stop), "STOP_REASON_") if stop in run_pb2.StopReason.values() else None


_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _plain(descriptor: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    """Proto3 JSON made like the rest of the API: 64-bit integers (token counts, epochs) as numbers, not strings;
    enums as short lower-case names (null when unspecified), as `run_json` shows them."""
    for field in descriptor.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        if field.type in _INT64:
            data[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.enum_type is not None and isinstance(value, str):
            data[field.name] = _enum(value, field.enum_type.values[0].name.removesuffix("UNSPECIFIED"))
        elif field.message_type is not None and isinstance(value, dict):
            data[field.name] = _plain(field.message_type, value)
    return data


def event_json(event: run_event_pb2.RunEvent) -> tuple[str, dict[str, Any]]:
    """The event's type name and its JSON body: every field of its payload, defaults included (`_plain`)."""
    kind = event.WhichOneof("payload") or "unknown"
    message = getattr(event, kind)
    payload = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    payload = _plain(message.DESCRIPTOR, payload)
    return kind, {
        "seq": event.seq,
        "run_id": event.run_id,
        "step": event.step,
        "type": kind,
        "time": time_json(event.create_time),
        "data": payload,
    }


def preview_json(preview: confirmation_pb2.Preview) -> dict[str, Any]:
    return {
        "kind": _enum(confirmation_pb2.PreviewKind.Name(preview.kind), "PREVIEW_KIND_"),
        "title": preview.title,
        "content": preview.content,
    }


def audit_event_json(event: audit_event_pb2.AuditEvent) -> dict[str, Any]:
    """One audit event: what happened, who did it, and what was shown and decided (null where the kind has none)."""
    return {
        "id": event.id,
        "confirmation_id": event.confirmation_id,
        "run_id": event.run_id,
        "kind": _enum(audit_event_pb2.AuditEventKind.Name(event.kind), "AUDIT_EVENT_KIND_"),
        "actor": event.actor or None,
        "surface": _enum(confirmation_pb2.Surface.Name(event.surface), "SURFACE_"),
        "reason": event.reason or None,
        "create_time": time_json(event.create_time),
        "preview": preview_json(event.preview) if event.HasField("preview") else None,
        "decision_schema": _arguments(event.decision_schema_json) if event.decision_schema_json else None,
        "arguments": _arguments(event.arguments_json) if event.arguments_json else None,
        "arguments_hash": event.arguments_hash or None,
        "decision": _arguments(event.decision_json) if event.decision_json else None,
        "edited_arguments": _arguments(event.edited_arguments_json) if event.edited_arguments_json else None,
        "edited_arguments_hash": event.edited_arguments_hash or None,
    }


def confirmation_json(confirmation: confirmation_pb2.Confirmation) -> dict[str, Any]:
    decision = confirmation.decision
    decided = confirmation.HasField("decision")
    return {
        "id": confirmation.id,
        "run_id": confirmation.run_id,
        "conversation_id": confirmation.conversation_id,
        "tool_call_id": confirmation.tool_call_id,
        "tool_name": confirmation.tool_name,
        "arguments": _arguments(confirmation.arguments_json),
        "arguments_hash": confirmation.arguments_hash,
        "preview": preview_json(confirmation.preview),
        "decision_schema": _arguments(confirmation.decision_schema_json),
        "decision_arguments": list(confirmation.decision_arguments),
        "kind": _enum(confirmation_pb2.ConfirmationKind.Name(confirmation.kind), "CONFIRMATION_KIND_"),
        "related_confirmation_id": confirmation.related_confirmation_id or None,
        "state": _enum(confirmation_pb2.ConfirmationState.Name(confirmation.state), "CONFIRMATION_STATE_"),
        "decision": (
            {
                "outcome": _enum(confirmation_pb2.DecisionOutcome.Name(decision.outcome), "DECISION_OUTCOME_"),
                "reason": decision.reason or None,
                "edited_arguments": _arguments(decision.edited_arguments_json)
                if decision.edited_arguments_json
                else None,
                "decided_by": decision.decided_by or None,
                "surface": _enum(confirmation_pb2.Surface.Name(decision.surface), "SURFACE_"),
                "decide_time": time_json(decision.decide_time),
            }
            if decided
            else None
        ),
        "create_time": time_json(confirmation.create_time),
        "expire_time": time_json(confirmation.expire_time),
        "acknowledge_time": time_json(confirmation.acknowledge_time, confirmation.HasField("acknowledge_time")),
    }
