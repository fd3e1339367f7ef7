"""Call recordings: where a recorded voice conversation's WAV lives.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.add_column("conversations", sa.Column("recording_path", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:  # SQLite rebuilds the table to drop a column
        batch.drop_column("recording_path")
