"""Billing (wallets, ledger, usage items, subscriptions, payment intents) and numbers (sandbox inventory,
holds, owned numbers).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("balance_credits", sa.BigInteger(), nullable=False),
        sa.Column("auto_reload_enabled", sa.Boolean(), nullable=False),
        sa.Column("auto_reload_threshold_credits", sa.BigInteger(), nullable=False),
        sa.Column("auto_reload_amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("entry_key", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_credits", sa.BigInteger(), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=True),
        sa.Column("reference_id", sa.String(80), nullable=True),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("org_id", "entry_key", name="uq_ledger_entries_key"),
    )
    op.create_index("ix_ledger_entries_org_seq", "ledger_entries", ["org_id", "seq"])
    op.create_table(
        "usage_items",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("ledger_entry_id", sa.String(40), nullable=True),
        sa.Column("agent_id", sa.String(40), nullable=True),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("quantity", sa.Numeric(18, 3), nullable=False),
        sa.Column("unit", sa.String(20), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("usage_date", sa.String(10), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("org_id", "event_id", name="uq_usage_items_event"),
    )
    op.create_index("ix_usage_items_org_date", "usage_items", ["org_id", "usage_date"])
    op.create_table(
        "subscriptions",
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("plan_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("current_period", sa.String(7), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "payment_intents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("provider_ref", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("request_key", sa.String(300), nullable=False),
        sa.Column("amount_credits", sa.BigInteger(), nullable=False),
        sa.Column("client_secret", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("settled_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("org_id", "request_key", name="uq_payment_intents_key"),
    )
    op.create_table(
        "sandbox_inventory",
        sa.Column("e164", sa.String(20), primary_key=True),
        sa.Column("area_code", sa.String(3), nullable=False),
        sa.Column("locality", sa.String(100), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("number_type", sa.String(10), nullable=False),
        sa.Column("features", sa.String(100), nullable=False),
        sa.Column("monthly_cost_credits", sa.Integer(), nullable=False),
        sa.Column("setup_cost_credits", sa.Integer(), nullable=False),
    )
    op.create_index("ix_sandbox_inventory_area", "sandbox_inventory", ["area_code"])
    op.create_index("ix_sandbox_inventory_region", "sandbox_inventory", ["region"])
    op.create_table(
        "number_reservations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("e164", sa.String(20), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "uq_number_reservations_active",
        "number_reservations",
        ["e164"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "phone_numbers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("e164", sa.String(20), nullable=False),
        sa.Column("number_type", sa.String(10), nullable=False),
        sa.Column("features", sa.String(100), nullable=False),
        sa.Column("locality", sa.String(100), nullable=True),
        sa.Column("region", sa.String(2), nullable=True),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("agent_id", sa.String(40), nullable=True),
        sa.Column("monthly_cost_credits", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=True),
    )
    op.create_index(
        "uq_phone_numbers_live_e164",
        "phone_numbers",
        ["e164"],
        unique=True,
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_index("ix_phone_numbers_org_created", "phone_numbers", ["org_id", "created_at", "id"])


def downgrade() -> None:
    for table in (
        "phone_numbers",
        "number_reservations",
        "sandbox_inventory",
        "payment_intents",
        "subscriptions",
        "usage_items",
        "ledger_entries",
        "wallets",
    ):
        op.drop_table(table)
