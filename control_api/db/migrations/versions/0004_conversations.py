"""Conversations (transcript messages and receipt events) and chat sessions.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("draft", sa.Boolean(), nullable=False),
        sa.Column("agent_version_id", sa.String(40), nullable=True),
        sa.Column("agent_version_number", sa.Integer(), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.Column("summary", sa.String(300), nullable=False),
        sa.Column("first_user_text", sa.String(500), nullable=True),
        sa.Column("end_user", sa.String(200), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("turn_count", sa.Integer(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("brain_state", sa.JSON(), nullable=True),
    )
    op.create_index("ix_conversations_org_started", "conversations", ["org_id", "started_at", "id"])
    op.create_index("ix_conversations_agent_started", "conversations", ["org_id", "agent_id", "started_at"])
    op.create_table(
        "conversation_messages",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("conversation_id", sa.String(40), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tool_calls", sa.JSON(), nullable=True),
        sa.Column("tool_call_id", sa.String(80), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("visible", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_conversation_messages_conversation", "conversation_messages", ["conversation_id", "seq"]
    )
    op.create_table(
        "conversation_events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("conversation_id", sa.String(40), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("t_ms", sa.Float(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_conversation_events_conversation", "conversation_events", ["conversation_id", "seq"])
    op.create_table(
        "chat_sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("conversation_id", sa.String(40), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("draft", sa.Boolean(), nullable=False),
        sa.Column("agent_version_id", sa.String(40), nullable=True),
        sa.Column("agent_config", sa.Text(), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("turn_started_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_chat_sessions_org_created", "chat_sessions", ["org_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_table("chat_sessions")
    op.drop_table("conversation_events")
    op.drop_table("conversation_messages")
    op.drop_table("conversations")
