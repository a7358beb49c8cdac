"""Initial schema: confirmations, per-run fencing, the decision feed and its head, audit events, executions.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 13:01:24.512961
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "confirmation_feed_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_cursor", sa.BigInteger(), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confirmation_feed_head")),
    )
    # The feed's one head row: every decision locks it to take the next cursor.
    feed_head = sa.table(
        "confirmation_feed_head",
        sa.column("id", sa.Integer()),
        sa.column("last_cursor", sa.BigInteger()),
        sa.column("pruned_through", sa.BigInteger()),
    )
    op.bulk_insert(feed_head, [{"id": 1, "last_cursor": 0, "pruned_through": 0}])
    op.create_table(
        "confirmation_runs",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("lease_epoch", sa.BigInteger(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("cancel_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "run_id", name=op.f("pk_confirmation_runs")),
    )
    op.create_table(
        "confirmations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("tool_call_id", sa.String(length=128), nullable=False),
        sa.Column("tool_name", sa.String(length=256), nullable=False),
        sa.Column("arguments_json", sa.Text(), nullable=False),
        sa.Column("arguments_hash", sa.String(length=64), nullable=False),
        sa.Column("preview_kind", sa.Integer(), nullable=False),
        sa.Column("preview_title", sa.Text(), nullable=False),
        sa.Column("preview_content", sa.Text(), nullable=False),
        sa.Column("decision_schema_json", sa.Text(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("related_confirmation_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("decision_reason", sa.Text(), nullable=False),
        sa.Column("edited_arguments_json", sa.Text(), nullable=False),
        sa.Column("decision_json", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.String(length=160), nullable=False),
        sa.Column("decision_surface", sa.Integer(), nullable=False),
        sa.Column("decide_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_cursor", sa.BigInteger(), nullable=True),
        sa.Column("acknowledge_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confirmations")),
        sa.UniqueConstraint("user_id", "request_id", name=op.f("uq_confirmations_user_id_request_id")),
    )
    op.create_index("ix_confirmations_state_expiry", "confirmations", ["state", "expire_time"])
    op.create_index("ix_confirmations_unacknowledged", "confirmations", ["acknowledge_time", "decision_cursor"])
    op.create_index("ix_confirmations_user_run", "confirmations", ["user_id", "run_id"])
    op.create_index("ix_confirmations_user_time", "confirmations", ["user_id", "create_time"])
    op.create_table(
        "confirmation_audit_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("confirmation_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.Column("surface", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["confirmation_id"],
            ["confirmations.id"],
            name=op.f("fk_confirmation_audit_events_confirmation_id_confirmations"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_confirmation_audit_events")),
        sa.UniqueConstraint("id", name=op.f("uq_confirmation_audit_events_id")),
    )
    op.create_index("ix_confirmation_audit_events_confirmation", "confirmation_audit_events", ["confirmation_id"])
    op.create_index("ix_confirmation_audit_events_user_seq", "confirmation_audit_events", ["user_id", "seq"])
    op.create_table(
        "confirmation_executions",
        sa.Column("confirmation_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("tool_call_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("idempotent", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=256), nullable=False),
        sa.Column("arguments_hash", sa.String(length=64), nullable=False),
        sa.Column("lease_epoch", sa.BigInteger(), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.Column("is_error", sa.Boolean(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["confirmation_id"],
            ["confirmations.id"],
            name=op.f("fk_confirmation_executions_confirmation_id_confirmations"),
        ),
        sa.PrimaryKeyConstraint("confirmation_id", name=op.f("pk_confirmation_executions")),
    )
    op.create_table(
        "confirmation_feed",
        sa.Column("cursor", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("confirmation_id", sa.String(length=64), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["confirmation_id"], ["confirmations.id"], name=op.f("fk_confirmation_feed_confirmation_id_confirmations")
        ),
        sa.PrimaryKeyConstraint("cursor", name=op.f("pk_confirmation_feed")),
    )
    op.create_index("ix_confirmation_feed_create_time", "confirmation_feed", ["create_time"])


def downgrade() -> None:
    op.drop_index("ix_confirmation_feed_create_time", table_name="confirmation_feed")
    op.drop_table("confirmation_feed")
    op.drop_table("confirmation_executions")
    op.drop_index("ix_confirmation_audit_events_user_seq", table_name="confirmation_audit_events")
    op.drop_index("ix_confirmation_audit_events_confirmation", table_name="confirmation_audit_events")
    op.drop_table("confirmation_audit_events")
    op.drop_index("ix_confirmations_user_time", table_name="confirmations")
    op.drop_index("ix_confirmations_user_run", table_name="confirmations")
    op.drop_index("ix_confirmations_unacknowledged", table_name="confirmations")
    op.drop_index("ix_confirmations_state_expiry", table_name="confirmations")
    op.drop_table("confirmations")
    op.drop_table("confirmation_runs")
    op.drop_table("confirmation_feed_head")
