"""Conversions between the confirm service's rows and the contract's messages."""

from __future__ import annotations

import json

from services.confirm.db.models import AuditEventRow, ConfirmationRow, ExecutionRow
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2, execution_pb2
from steward.timeutil import timestamp


def confirmation_message(row: ConfirmationRow) -> confirmation_pb2.Confirmation:
    message = confirmation_pb2.Confirmation(
        id=row.id,
        user_id=row.user_id,
        run_id=row.run_id,
        conversation_id=row.conversation_id,
        tool_call_id=row.tool_call_id,
        tool_name=row.tool_name,
        arguments_json=row.arguments_json,
        arguments_hash=row.arguments_hash,
        preview=confirmation_pb2.Preview(
            kind=row.preview_kind,
            content=row.preview_content,
            title=row.preview_title,
        ),
        decision_schema_json=row.decision_schema_json,
        kind=row.kind,
        related_confirmation_id=row.related_confirmation_id,
        state=row.state,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        expire_time=timestamp(row.expire_time),
        acknowledge_time=timestamp(row.acknowledge_time),
        decision_arguments=json.loads(row.decision_arguments_json) if row.decision_arguments_json else [],
    )
    if row.decide_time is not None:
        message.decision.CopyFrom(
            confirmation_pb2.Decision(
                outcome=row.outcome,
                reason=row.decision_reason,
                edited_arguments_json=row.edited_arguments_json,
                decision_json=row.decision_json,
                decided_by=row.decided_by,
                surface=row.decision_surface,
                decide_time=timestamp(row.decide_time),
            )
        )
    return message


def audit_event_message(row: AuditEventRow) -> audit_event_pb2.AuditEvent:
    message = audit_event_pb2.AuditEvent(
        id=row.id,
        confirmation_id=row.confirmation_id,
        run_id=row.run_id,
        kind=row.kind,
        actor=row.actor,
        surface=row.surface,
        reason=row.reason,
        create_time=timestamp(row.create_time),
        decision_schema_json=row.decision_schema_json,
        arguments_json=row.arguments_json,
        arguments_hash=row.arguments_hash,
        decision_json=row.decision_json,
        edited_arguments_json=row.edited_arguments_json,
        edited_arguments_hash=row.edited_arguments_hash,
    )
    if row.preview_kind:
        message.preview.CopyFrom(
            confirmation_pb2.Preview(kind=row.preview_kind, title=row.preview_title, content=row.preview_content)
        )
    return message


def execution_message(row: ExecutionRow) -> execution_pb2.Execution:
    return execution_pb2.Execution(
        confirmation_id=row.confirmation_id,
        run_id=row.run_id,
        tool_call_id=row.tool_call_id,
        state=row.state,
        idempotent=row.idempotent,
        idempotency_key=row.idempotency_key,
        arguments_hash=row.arguments_hash,
        lease_epoch=row.lease_epoch,
        result_json=row.result_json,
        is_error=row.is_error,
        start_time=timestamp(row.start_time),
        finish_time=timestamp(row.finish_time),
    )
