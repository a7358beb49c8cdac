"""The provider service's tables. Money is int64 micro-dollars; times are UTC."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false

from steward import orm
from steward.provider.v1 import budget_pb2, key_pb2, usage_record_pb2

INSTANCE_OWNER = "instance"  # owner_id of per-instance keys and budgets


class Base(DeclarativeBase):
    metadata = orm.metadata()


class ProviderKeyRow(Base):
    """A provider key in the embedded key store: only ciphertext, never the secret."""

    __tablename__ = "provider_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(128))  # a user id, or INSTANCE_OWNER
    provider: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(Text, default="")
    last4: Mapped[str] = mapped_column(String(4))
    # Which master key encrypted it (rotation re-encrypts under the current one).
    master_key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    # AES-GCM(master key, secret, AAD = owner|provider|id|master_key_id).
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("owner_id", "provider"),)


class UsageRecordRow(Base):
    """One attempt of one model call, whatever its outcome."""

    __tablename__ = "usage_records"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str] = mapped_column(String(64), default="")
    run_id: Mapped[str] = mapped_column(String(64), default="")
    step: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str] = mapped_column(String(160), default="")
    route: Mapped[str] = mapped_column(String(128), default="")
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    # steward.provider.v1.AttemptOutcome value.
    outcome: Mapped[usage_record_pb2.AttemptOutcome.ValueType] = mapped_column(Integer)
    key_scope: Mapped[key_pb2.KeyScope.ValueType] = mapped_column(Integer, default=0)
    error_reason: Mapped[str] = mapped_column(String(64), default="")
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # The model had no price (and was not marked free): cost_micros is 0 and says nothing.
    cost_unknown: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_usage_records_owner_time", "owner_id", "create_time"),
        Index("ix_usage_records_owner_run", "owner_id", "run_id"),
    )


class BudgetRow(Base):
    """A spending limit for a user, or for one of a user's agents or runs, in one period."""

    __tablename__ = "budgets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(128))
    # steward.provider.v1.BudgetScope value, and the agent or run id ("" for the user scope).
    scope: Mapped[budget_pb2.BudgetScope.ValueType] = mapped_column(Integer)
    scope_id: Mapped[str] = mapped_column(String(64), default="")
    # steward.provider.v1.BudgetPeriod value.
    period: Mapped[budget_pb2.BudgetPeriod.ValueType] = mapped_column(Integer)
    limit_micros: Mapped[int] = mapped_column(BigInteger)
    # Settled spend and outstanding reservations in the current period.
    spent_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    period_start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("owner_id", "scope", "scope_id"),)


class ReservationRow(Base):
    """Worst-case cost held against budgets while a call runs; settled (deleted) after it."""

    __tablename__ = "budget_reservations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(128))
    # The budget ids it holds against, as a JSON list, and the amount held on each.
    budget_ids: Mapped[str] = mapped_column(Text)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
