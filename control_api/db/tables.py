"""The schema, declared once. Every tenant-owned table carries `org_id`, and every query filters on it.

Migrations in `migrations/versions/` create exactly these tables; `tests/test_migrations.py` checks that
the migrated schema and this declaration agree.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False, index=True),
    sa.Column("label", sa.String(200), nullable=False),
    # The first characters of the secret, shown in listings so a person can tell keys apart.
    sa.Column("prefix", sa.String(40), nullable=False),
    # SHA-256 of the whole secret; the secret itself is never stored.
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("revoked_at", sa.DateTime(), nullable=True),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    # The draft's agent-level fields (persona, languages, voice, handoff, ...) as one JSON document.
    sa.Column("draft", sa.JSON(), nullable=False),
    # Bumped by every edit of the agent's own fields; the If-Match / ETag value.
    sa.Column("draft_version", sa.Integer(), nullable=False),
    sa.Column("guardrails", sa.JSON(), nullable=False),
    sa.Column("caller_verification", sa.JSON(), nullable=False),
    sa.Column("published_version_id", sa.String(40), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("deleted_at", sa.DateTime(), nullable=True),
    sa.Index("ix_agents_org_created", "org_id", "created_at", "id"),
)

skills = sa.Table(
    "skills",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
    # Lower-cased name: skill names become tool names, so they are unique per agent.
    sa.Column("name_key", sa.String(200), nullable=False),
    sa.Column("skill_type", sa.String(40), nullable=False),
    sa.Column("spec", sa.JSON(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("agent_id", "name_key", name="uq_skills_agent_name"),
    sa.Index("ix_skills_agent_created", "org_id", "agent_id", "created_at", "id"),
)

agent_versions = sa.Table(
    "agent_versions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("version_number", sa.Integer(), nullable=False),
    # Canonical JSON text of the compiled config: stored as text so its hash is reproducible byte for byte.
    sa.Column("config_json", sa.Text(), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("note", sa.String(1000), nullable=True),
    sa.Column("published_by", sa.String(40), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("agent_id", "version_number", name="uq_agent_versions_number"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("org_id", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # in_flight until the first request finishes, then done with the stored response.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("response_status", sa.Integer(), nullable=True),
    sa.Column("response_body", sa.Text(), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
)

audit_logs = sa.Table(
    "audit_logs",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    # Null for requests that never authenticated: kept for operators, never shown to a tenant.
    sa.Column("org_id", sa.String(40), nullable=True),
    sa.Column("actor_type", sa.String(20), nullable=False),
    sa.Column("actor_id", sa.String(40), nullable=True),
    sa.Column("method", sa.String(10), nullable=False),
    sa.Column("endpoint", sa.String(300), nullable=False),
    sa.Column("path", sa.String(2000), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("request_id", sa.String(40), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Index("ix_audit_logs_org_seq", "org_id", "seq"),
)
