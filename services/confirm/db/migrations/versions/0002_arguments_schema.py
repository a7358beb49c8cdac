"""Confirmations keep the tool's input schema, which edited arguments must satisfy.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 20:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("confirmations") as batch:
        batch.add_column(sa.Column("arguments_schema_json", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("confirmations") as batch:
        batch.drop_column("arguments_schema_json")
