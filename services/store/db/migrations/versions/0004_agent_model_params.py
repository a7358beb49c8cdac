"""Agents keep their model parameters and a version that every change bumps.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("model_params", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("version", sa.BigInteger(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("version")
        batch.drop_column("model_params")
