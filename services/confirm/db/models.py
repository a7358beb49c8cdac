"""The confirm service's tables. Times are UTC; enum columns hold steward.confirm.v1 enum values.

Every row carries the `user_id` of the principal it was created for, and every query is scoped
by it, except the feed's (the decision feed serves every user's decisions to the runtime).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from steward import orm
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2, execution_pb2

FEED_HEAD_ID = 1  # the one row of confirmation_feed_head
# An autoincrementing 64-bit key: SQLite autoincrements only INTEGER PRIMARY KEY columns.
SEQUENCE = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    metadata = orm.metadata()


class ConfirmationRow(Base):
    """One confirmation, with its decision once it has one."""

    __tablename__ = "confirmations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str] = mapped_column(String(64), default="")
    tool_call_id: Mapped[str] = mapped_column(String(128))
    tool_name: Mapped[str] = mapped_column(String(256))
    arguments_json: Mapped[str] = mapped_column(Text)
    # SHA-256 of the canonical arguments (services/confirm/canonical.py), lowercase hex.
    arguments_hash: Mapped[str] = mapped_column(String(64))
    preview_kind: Mapped[confirmation_pb2.PreviewKind.ValueType] = mapped_column(Integer)
    preview_title: Mapped[str] = mapped_column(Text, default="")
    preview_content: Mapped[str] = mapped_column(Text)
    decision_schema_json: Mapped[str] = mapped_column(Text)
    # The tool's input schema, which edited arguments must satisfy; "" for none.
    arguments_schema_json: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The decision schema's properties that become arguments when approved, as a JSON array; "" for none.
    decision_arguments_json: Mapped[str] = mapped_column(Text, default="", server_default="")
    kind: Mapped[confirmation_pb2.ConfirmationKind.ValueType] = mapped_column(Integer)
    related_confirmation_id: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[confirmation_pb2.ConfirmationState.ValueType] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The decision (APPROVED, REJECTED, EXPIRED); outcome 0 and decide_time NULL until then.
    outcome: Mapped[confirmation_pb2.DecisionOutcome.ValueType] = mapped_column(Integer, default=0)
    decision_reason: Mapped[str] = mapped_column(Text, default="")
    edited_arguments_json: Mapped[str] = mapped_column(Text, default="")
    decision_json: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(160), default="")
    decision_surface: Mapped[confirmation_pb2.Surface.ValueType] = mapped_column(Integer, default=0)
    decide_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The decision's place on the feed (confirmation_feed.cursor), kept after the feed entry is trimmed.
    decision_cursor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    acknowledge_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # CreateConfirmation's idempotency key (NULL when none was given) and the hash of what it asked for.
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (
        UniqueConstraint("user_id", "request_id"),
        Index("ix_confirmations_user_time", "user_id", "create_time"),
        Index("ix_confirmations_user_run", "user_id", "run_id"),
        Index("ix_confirmations_state_expiry", "state", "expire_time"),
        Index("ix_confirmations_unacknowledged", "acknowledge_time", "decision_cursor"),
    )


class RunFenceRow(Base):
    """Per run: the highest lease epoch seen, and whether the run ended (its confirmations cancelled)."""

    __tablename__ = "confirmation_runs"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lease_epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    cancel_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FeedEntryRow(Base):
    """One decision on the feed (APPROVED, REJECTED or EXPIRED), in decision order."""

    __tablename__ = "confirmation_feed"

    cursor: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    confirmation_id: Mapped[str] = mapped_column(String(64), ForeignKey("confirmations.id"))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_confirmation_feed_create_time", "create_time"),)


class FeedHeadRow(Base):
    """The feed's last cursor and the highest cursor trimmed away; one row, locked to append."""

    __tablename__ = "confirmation_feed_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_cursor: Mapped[int] = mapped_column(BigInteger)
    pruned_through: Mapped[int] = mapped_column(BigInteger)


class AuditEventRow(Base):
    """One append-only audit event; `seq` orders a user's trail."""

    __tablename__ = "confirmation_audit_events"

    seq: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(String(128))
    confirmation_id: Mapped[str] = mapped_column(String(64), ForeignKey("confirmations.id"))
    run_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[audit_event_pb2.AuditEventKind.ValueType] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(160), default="")
    surface: Mapped[confirmation_pb2.Surface.ValueType] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # What was shown and what was decided (see AuditEvent): set for the kinds that carry them, "" (0) otherwise.
    preview_kind: Mapped[confirmation_pb2.PreviewKind.ValueType] = mapped_column(Integer, default=0, server_default="0")
    preview_title: Mapped[str] = mapped_column(Text, default="", server_default="")
    preview_content: Mapped[str] = mapped_column(Text, default="", server_default="")
    decision_schema_json: Mapped[str] = mapped_column(Text, default="", server_default="")
    arguments_json: Mapped[str] = mapped_column(Text, default="", server_default="")
    arguments_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
    decision_json: Mapped[str] = mapped_column(Text, default="", server_default="")
    edited_arguments_json: Mapped[str] = mapped_column(Text, default="", server_default="")
    edited_arguments_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")

    __table_args__ = (
        Index("ix_confirmation_audit_events_user_seq", "user_id", "seq"),
        Index("ix_confirmation_audit_events_confirmation", "confirmation_id"),
    )


class ExecutionRow(Base):
    """The execution ledger entry of an approved confirmation (at most one per confirmation)."""

    __tablename__ = "confirmation_executions"

    confirmation_id: Mapped[str] = mapped_column(String(64), ForeignKey("confirmations.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str] = mapped_column(String(64))
    tool_call_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[execution_pb2.ExecutionState.ValueType] = mapped_column(Integer)
    idempotent: Mapped[bool] = mapped_column(Boolean)
    idempotency_key: Mapped[str] = mapped_column(String(256))
    arguments_hash: Mapped[str] = mapped_column(String(64))
    lease_epoch: Mapped[int] = mapped_column(BigInteger)
    result_json: Mapped[str] = mapped_column(Text, default="")
    is_error: Mapped[bool] = mapped_column(Boolean, default=False)
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finish_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
