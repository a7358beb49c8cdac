"""Conversions between the store's rows and the contract's messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from google.protobuf import json_format
from sqlalchemy import Row

from services.store.db.models import ConversationRow, MessageRow, RunRow
from steward.common.v1 import content_pb2, limits_pb2, usage_pb2
from steward.store.v1 import conversation_pb2, run_pb2
from steward.timeutil import aware, timestamp


def content_to_json(blocks: list[content_pb2.ContentBlock]) -> str:
    return json.dumps([json_format.MessageToDict(block) for block in blocks], separators=(",", ":"))


def content_from_json(text: str) -> list[content_pb2.ContentBlock]:
    return [json_format.ParseDict(item, content_pb2.ContentBlock()) for item in json.loads(text)]


def conversation_message(row: ConversationRow) -> conversation_pb2.Conversation:
    return conversation_pb2.Conversation(
        id=row.id,
        title=row.title,
        agent_id=row.agent_id,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def message_message(row: MessageRow | Row[Any]) -> conversation_pb2.Message:
    """A message from its ORM row or a Core row of the messages table."""
    return conversation_pb2.Message(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        role=row.role,
        content=content_from_json(row.content),
        run_id=row.run_id,
        create_time=timestamp(row.create_time),
    )


def run_from_columns(values: Mapping[str, Any]) -> run_pb2.Run:
    """A run from the plain values of its columns (a row being written, before any read-back)."""
    return run_message(SimpleNamespace(**values))


def run_message(row: RunRow | Row[Any] | SimpleNamespace) -> run_pb2.Run:
    """A run from its ORM row, a Core row of the runs table, or a namespace of its columns."""
    run = run_pb2.Run(
        id=row.id,
        conversation_id=row.conversation_id,
        agent_id=row.agent_id,
        state=row.state,
        pause_reason=row.pause_reason,
        incomplete_reason=row.incomplete_reason,
        stop_reason=row.stop_reason or run_pb2.STOP_REASON_UNSPECIFIED,
        mode=row.mode,
        step_count=row.step_count,
        owner_id=row.owner_id,
        compacted_through_seq=row.compacted_through_seq,
        lease_epoch=row.lease_epoch,
        last_event_seq=row.last_event_seq,
        request_id=row.request_id or "",
        cancel_requested=row.cancel_requested,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        end_time=timestamp(row.end_time),
        agent_version=row.agent_version or 0,
    )
    if row.error:
        run.error.ParseFromString(row.error)
    if row.limits:
        run.limits.CopyFrom(limits_pb2.RunLimits.FromString(row.limits))
    if row.usage:
        run.usage.CopyFrom(usage_pb2.Usage.FromString(row.usage))
    if row.client_tools:
        run.client_tools.extend(run_pb2.Run.FromString(row.client_tools).client_tools)
    if row.running_ms:
        run.running_time.FromMilliseconds(row.running_ms)
    if row.pause_expire_time is not None:
        run.pause_expire_time.FromDatetime(aware(row.pause_expire_time))
    return run
