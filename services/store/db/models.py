"""The store's tables. Every row that belongs to a user carries `owner_id`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from steward import orm
from steward.common.v1 import content_pb2
from steward.store.v1 import agent_pb2, run_pb2


class Base(DeclarativeBase):
    metadata = orm.metadata()


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text, default="")
    # The service principal that created the user and its idempotency key.
    created_by: Mapped[str] = mapped_column(String(128), default="")
    request_id: Mapped[str | None] = mapped_column(String(128))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("created_by", "request_id"),)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The non-secret lookup prefix that starts the token text; unique.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    # HMAC-SHA256(pepper, token text), hex. The token text itself is never stored.
    token_hmac: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(Text, default="")
    # Scopes as a JSON list of strings.
    scopes: Mapped[str] = mapped_column(Text, default="[]")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebSessionRow(Base):
    """A signed-in browser (services/store/db/web_sessions.py): the server side of the web app's cookie."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # HMAC-SHA256(pepper, session secret), hex; the secret (the cookie's value) is never stored.
    secret_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    # The API token the session is bound to; NULL for a session bound to credential_digest.
    token_id: Mapped[str | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    # SHA-256 (hex) of the non-API-token credential it is bound to (the gateway's dev token); "" otherwise.
    credential_digest: Mapped[str] = mapped_column(String(64), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    idle_seconds: Mapped[int] = mapped_column(Integer)
    last_use_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    model_route: Mapped[str] = mapped_column(String(128), default="")
    # Qualified tool names as a JSON list of strings.
    tools: Mapped[str] = mapped_column(Text, default="[]")
    # steward.store.v1.ApprovalPolicy, serialized.
    approval_policy: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    # steward.common.v1.RunLimits, serialized.
    limits: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    # steward.store.v1.ModelParams, serialized; NULL for agents made before it existed.
    model_params: Mapped[bytes | None] = mapped_column(LargeBinary)
    # 1 at creation, one more for every update that changes the agent.
    version: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    request_id: Mapped[str | None] = mapped_column(String(128))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("owner_id", "name"), UniqueConstraint("owner_id", "request_id"))


class ConversationRow(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(128), index=True)
    title: Mapped[str] = mapped_column(Text, default="")
    agent_id: Mapped[str] = mapped_column(String(64), default="")
    request_id: Mapped[str | None] = mapped_column(String(128))
    last_message_seq: Mapped[int] = mapped_column(Integer, default=0)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("owner_id", "request_id"),)


class MessageRow(Base):
    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[content_pb2.Role.ValueType] = mapped_column(Integer)
    # Ordered content blocks as JSON text (steward.common.v1.ContentBlock in JSON form).
    content: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(64), default="")
    request_id: Mapped[str | None] = mapped_column(String(128))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        UniqueConstraint("owner_id", "request_id"),
    )


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(128), index=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[run_pb2.RunState.ValueType] = mapped_column(Integer)
    pause_reason: Mapped[run_pb2.PauseReason.ValueType] = mapped_column(Integer, default=0)
    incomplete_reason: Mapped[run_pb2.IncompleteReason.ValueType] = mapped_column(Integer, default=0)
    # steward.store.v1.RunError, serialized; empty when the run has not failed.
    error: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    mode: Mapped[agent_pb2.RunMode.ValueType] = mapped_column(Integer, default=0)
    # steward.common.v1.RunLimits, serialized.
    limits: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    # steward.common.v1.Usage, serialized.
    usage: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    lease_epoch: Mapped[int] = mapped_column(Integer, default=0)
    lease_holder: Mapped[str] = mapped_column(String(128), default="")
    lease_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A paused run's pause deadline (ADR 0018): past it, the run ends expired; None when not paused or no deadline.
    pause_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_event_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Events up to this seq were removed by retention (0: none); older cursors are expired.
    compacted_through_seq: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str | None] = mapped_column(String(128))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The caller's own tools (client-side tools): a serialized Run holding only `client_tools`; None when none.
    client_tools: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Milliseconds the run has spent running, summed over its claims (the runtime checkpoints it).
    running_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The version of the agent the run started with (from its run_started event); 0 before, and for the default agent.
    agent_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Why the model stopped in the run's last model step (steward.store.v1.StopReason; 0 before one ended).
    stop_reason: Mapped[run_pb2.StopReason.ValueType] = mapped_column(Integer, default=0, server_default="0")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("owner_id", "request_id"),
        Index("ix_runs_claimable", "state", "lease_expire_time"),
    )


class RunEventRow(Base):
    __tablename__ = "run_events"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    # The payload's oneof name, e.g. "text_delta".
    kind: Mapped[str] = mapped_column(String(64))
    # steward.store.v1.RunEvent with run_id, seq and create_time cleared, serialized.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunWriteRow(Base):
    """Idempotency keys of event appends and checkpoints: a retry returns the first result."""

    __tablename__ = "run_writes"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    # Ids of the messages the write appended, as a JSON list.
    message_ids: Mapped[str] = mapped_column(Text, default="[]")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
