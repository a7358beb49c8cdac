"""Audit events keep what the person was shown (preview, decision schema, arguments) and what was decided
(the decision, edited arguments and their hash); confirmations keep their decision arguments.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXTS = (
    "preview_title",
    "preview_content",
    "decision_schema_json",
    "arguments_json",
    "decision_json",
    "edited_arguments_json",
)
_HASHES = ("arguments_hash", "edited_arguments_hash")


def upgrade() -> None:
    with op.batch_alter_table("confirmations") as batch:
        batch.add_column(sa.Column("decision_arguments_json", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("confirmation_audit_events") as batch:
        batch.add_column(sa.Column("preview_kind", sa.Integer(), nullable=False, server_default="0"))
        for name in _TEXTS:
            batch.add_column(sa.Column(name, sa.Text(), nullable=False, server_default=""))
        for name in _HASHES:
            batch.add_column(sa.Column(name, sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("confirmation_audit_events") as batch:
        for name in ("preview_kind", *_TEXTS, *_HASHES):
            batch.drop_column(name)
    with op.batch_alter_table("confirmations") as batch:
        batch.drop_column("decision_arguments_json")
