"""The audit trail: one append-only event per change or refused decision, written in the change's transaction.

An event is self-contained: CREATED keeps the proposal as it will be shown (preview, decision schema, arguments and
their hash), DECIDED keeps it again with the decision made on it (the decision, the arguments to execute and their
hash), so what a person saw stays bound to what they decided even when read event by event.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.confirm.db import convert
from services.confirm.db.database import Database
from services.confirm.db.models import AuditEventRow, ConfirmationRow
from steward import canonical, paging
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2

# An event's seq is unique: it is the whole key.
_OLDEST_FIRST = paging.Keyset("audit.1", (AuditEventRow.seq,), (False,), (int,))


def record(
    session: AsyncSession,
    confirmation: ConfirmationRow,
    kind: audit_event_pb2.AuditEventKind.ValueType,
    *,
    actor: str,
    surface: confirmation_pb2.Surface.ValueType,
    reason: str,
    now: datetime,
    decision_json: str = "",
    arguments_hash: str = "",
) -> None:
    """Add an audit event about `confirmation` to the session's transaction. CREATED and DECIDED events take what was
    shown (and DECIDED what was decided) from the confirmation; `decision_json` is a refused decision's text,
    `arguments_hash` the hash of the arguments an execution runs."""
    row = AuditEventRow(
        id=str(uuid.uuid4()),
        user_id=confirmation.user_id,
        confirmation_id=confirmation.id,
        run_id=confirmation.run_id,
        kind=kind,
        actor=actor,
        surface=surface,
        reason=reason,
        create_time=now,
        decision_json=decision_json,
        arguments_hash=arguments_hash,
    )
    if kind in (audit_event_pb2.AUDIT_EVENT_KIND_CREATED, audit_event_pb2.AUDIT_EVENT_KIND_DECIDED):
        row.preview_kind = confirmation.preview_kind
        row.preview_title = confirmation.preview_title
        row.preview_content = confirmation.preview_content
        row.decision_schema_json = confirmation.decision_schema_json
        row.arguments_hash = confirmation.arguments_hash
    if kind == audit_event_pb2.AUDIT_EVENT_KIND_CREATED:
        row.arguments_json = confirmation.arguments_json
    if kind == audit_event_pb2.AUDIT_EVENT_KIND_DECIDED:
        row.decision_json = confirmation.decision_json
        row.edited_arguments_json = confirmation.edited_arguments_json
        if confirmation.edited_arguments_json:
            row.edited_arguments_hash = canonical.sha256_hex(canonical.parse(confirmation.edited_arguments_json))
    session.add(row)


class AuditRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def list_events(
        self, user_id: str, run_id: str, confirmation_id: str, page_token: str, page_size: int
    ) -> tuple[list[audit_event_pb2.AuditEvent], str]:
        """The user's audit events, oldest first, optionally of one run or confirmation."""
        query = select(AuditEventRow).where(AuditEventRow.user_id == user_id)
        if run_id:
            query = query.where(AuditEventRow.run_id == run_id)
        if confirmation_id:
            query = query.where(AuditEventRow.confirmation_id == confirmation_id)
        async with self._db.reads() as session, session.begin():
            return await paging.read_page(
                session, query, _OLDEST_FIRST, page_token, page_size, convert.audit_event_message
            )
