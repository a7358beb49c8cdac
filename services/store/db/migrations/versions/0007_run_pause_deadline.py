"""Paused runs keep their pause deadline, so the runtime's sweeps find the runs whose pause expired (ADR 0018).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("pause_expire_time", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_runs_pause_expire_time", ["pause_expire_time"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_pause_expire_time")
        batch.drop_column("pause_expire_time")
