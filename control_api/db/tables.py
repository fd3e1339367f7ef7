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

# --- Billing: a prepaid wallet on an append-only ledger (migration 0002) ---

wallets = sa.Table(
    "wallets",
    metadata,
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True),
    # SUM(ledger_entries.amount_credits) for the org, maintained in the same transaction as every entry;
    # the row is also the per-organization lock that serializes money movements.
    sa.Column("balance_credits", sa.BigInteger(), nullable=False),
    sa.Column("auto_reload_enabled", sa.Boolean(), nullable=False),
    sa.Column("auto_reload_threshold_credits", sa.BigInteger(), nullable=False),
    sa.Column("auto_reload_amount_credits", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
)

ledger_entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    # The request's idempotency key or the usage event id: what makes a retry land exactly once.
    sa.Column("entry_key", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    # Signed: credits in are positive, debits negative. 1 credit = 1 cent.
    sa.Column("amount_credits", sa.BigInteger(), nullable=False),
    sa.Column("balance_after_credits", sa.BigInteger(), nullable=False),
    sa.Column("agent_id", sa.String(40), nullable=True),
    sa.Column("reference_id", sa.String(80), nullable=True),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("org_id", "entry_key", name="uq_ledger_entries_key"),
    sa.Index("ix_ledger_entries_org_seq", "org_id", "seq"),
)

usage_items = sa.Table(
    "usage_items",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("ledger_entry_id", sa.String(40), nullable=True),
    sa.Column("agent_id", sa.String(40), nullable=True),
    sa.Column("channel", sa.String(20), nullable=False),  # voice | chat | transfer_minute | number
    sa.Column("quantity", sa.Numeric(18, 3), nullable=False),
    sa.Column("unit", sa.String(20), nullable=False),
    sa.Column("credits", sa.BigInteger(), nullable=False),
    sa.Column("detail", sa.JSON(), nullable=False),
    sa.Column("usage_date", sa.String(10), nullable=False),  # YYYY-MM-DD (UTC): daily records group on it
    sa.Column("occurred_at", sa.DateTime(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("org_id", "event_id", name="uq_usage_items_event"),
    sa.Index("ix_usage_items_org_date", "org_id", "usage_date"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("plan_id", sa.String(40), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("current_period", sa.String(7), nullable=False),  # YYYY-MM the included minutes belong to
    sa.Column("started_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
)

payment_intents = sa.Table(
    "payment_intents",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("provider_ref", sa.String(200), nullable=False),
    sa.Column("purpose", sa.String(20), nullable=False),  # topup | auto_reload
    # The request's Idempotency-Key (or the triggering ledger entry for auto-reload): never charge twice.
    sa.Column("request_key", sa.String(300), nullable=False),
    sa.Column("amount_credits", sa.BigInteger(), nullable=False),
    sa.Column("client_secret", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # processing | succeeded | failed
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("settled_at", sa.DateTime(), nullable=True),
    sa.UniqueConstraint("org_id", "request_key", name="uq_payment_intents_key"),
)

# --- Numbers: the sandbox carrier's inventory, holds, and owned numbers (migration 0002) ---

sandbox_inventory = sa.Table(
    "sandbox_inventory",
    metadata,
    sa.Column("e164", sa.String(20), primary_key=True),
    sa.Column("area_code", sa.String(3), nullable=False),
    sa.Column("locality", sa.String(100), nullable=False),
    sa.Column("region", sa.String(2), nullable=False),
    sa.Column("number_type", sa.String(10), nullable=False),  # local | toll_free
    sa.Column("features", sa.String(100), nullable=False),  # space-separated: voice sms mms fax
    sa.Column("monthly_cost_credits", sa.Integer(), nullable=False),
    sa.Column("setup_cost_credits", sa.Integer(), nullable=False),
    sa.Index("ix_sandbox_inventory_area", "area_code"),
    sa.Index("ix_sandbox_inventory_region", "region"),
)

number_reservations = sa.Table(
    "number_reservations",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("e164", sa.String(20), nullable=False),
    # active | released | consumed | expired. An active hold past expires_at is expired when read.
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Index(
        "uq_number_reservations_active",
        "e164",
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    ),
)

phone_numbers = sa.Table(
    "phone_numbers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("e164", sa.String(20), nullable=False),
    sa.Column("number_type", sa.String(10), nullable=False),
    sa.Column("features", sa.String(100), nullable=False),
    sa.Column("locality", sa.String(100), nullable=True),
    sa.Column("region", sa.String(2), nullable=True),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("source", sa.String(10), nullable=False),  # purchased | imported
    sa.Column("agent_id", sa.String(40), nullable=True),
    sa.Column("monthly_cost_credits", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("released_at", sa.DateTime(), nullable=True),
    # One live owner per number, across every organization.
    sa.Index(
        "uq_phone_numbers_live_e164",
        "e164",
        unique=True,
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    ),
    sa.Index("ix_phone_numbers_org_created", "org_id", "created_at", "id"),
)

# --- Knowledge: sources, their indexed generations and passages, uploads, and gaps (migration 0003) ---

knowledge_sources = sa.Table(
    "knowledge_sources",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # text | faq | url | file
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # pending | indexed | error
    # Why the last ingestion failed; a failed refresh of an indexed source keeps it indexed and says why here.
    sa.Column("error", sa.String(1000), nullable=True),
    # What the source was made from: {text} | {items} | {url} | {fileId, filename, contentType, size}.
    sa.Column("spec", sa.JSON(), nullable=False),
    # The text of the current generation, and the SHA-256 that decides whether a re-crawl changed anything.
    sa.Column("content", sa.Text(), nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=True),
    sa.Column("generation", sa.Integer(), nullable=True),  # the generation the draft searches
    sa.Column("chunk_count", sa.Integer(), nullable=False),
    sa.Column("auto_refresh", sa.Boolean(), nullable=False),
    sa.Column("refresh_interval_hours", sa.Integer(), nullable=False),
    sa.Column("next_refresh_at", sa.DateTime(), nullable=True),
    # Set while work on the source is owed (ingest or re-crawl); a restarted worker resumes these rows.
    sa.Column("queued_at", sa.DateTime(), nullable=True),
    sa.Column("last_checked_at", sa.DateTime(), nullable=True),
    sa.Column("last_changed_at", sa.DateTime(), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    # A deleted source leaves the draft; its generations stay while a published version names them.
    sa.Column("deleted_at", sa.DateTime(), nullable=True),
    sa.Index("ix_knowledge_sources_agent_created", "org_id", "agent_id", "created_at", "id"),
    sa.Index("ix_knowledge_sources_queued", "queued_at"),
    sa.Index("ix_knowledge_sources_refresh", "next_refresh_at"),
)

knowledge_generations = sa.Table(
    "knowledge_generations",
    metadata,
    sa.Column("source_id", sa.String(40), sa.ForeignKey("knowledge_sources.id"), primary_key=True),
    sa.Column("generation", sa.Integer(), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("chunk_count", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    # When a newer generation (or the source's deletion) replaced it in the draft; null while current.
    sa.Column("superseded_at", sa.DateTime(), nullable=True),
)

knowledge_chunks = sa.Table(
    "knowledge_chunks",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("source_id", sa.String(40), sa.ForeignKey("knowledge_sources.id"), nullable=False),
    sa.Column("generation", sa.Integer(), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("embedding", sa.LargeBinary(), nullable=False),  # float32 little-endian, L2-normalized
    sa.Index("ix_knowledge_chunks_generation", "source_id", "generation", "position"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    # An upload never attached by then is garbage-collected; attaching it later answers 404 file_expired.
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.Column("attached_at", sa.DateTime(), nullable=True),
    sa.Index("ix_uploads_expires", "expires_at"),
)

knowledge_gaps = sa.Table(
    "knowledge_gaps",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
    # The question normalized (case, punctuation, spacing): repeats of one question land on one row.
    sa.Column("question_key", sa.String(300), nullable=False),
    sa.Column("question", sa.String(1000), nullable=False),
    sa.Column("occurrences", sa.Integer(), nullable=False),
    sa.Column("last_top_score", sa.Float(), nullable=True),
    sa.Column("last_conversation_id", sa.String(80), nullable=True),
    sa.Column("status", sa.String(12), nullable=False),  # open | in_progress | dismissed | covered
    sa.Column("first_seen_at", sa.DateTime(), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("agent_id", "question_key", name="uq_knowledge_gaps_question"),
    sa.Index("ix_knowledge_gaps_agent_seen", "org_id", "agent_id", "last_seen_at"),
)

# --- Conversations and chat sessions (migration 0004) ---

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),  # chat | api | simulate | voice
    sa.Column("draft", sa.Boolean(), nullable=False),  # ran the draft (never billed)
    sa.Column("agent_version_id", sa.String(40), nullable=True),  # the published version it ran; null for draft
    sa.Column("agent_version_number", sa.Integer(), nullable=True),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # active | ended
    # completed | transferred | ended_by_agent | abandoned | error; null while active
    sa.Column("outcome", sa.String(20), nullable=True),
    sa.Column("summary", sa.String(300), nullable=False),  # one line, derived from first_user_text and outcome
    sa.Column("first_user_text", sa.String(500), nullable=True),
    sa.Column("end_user", sa.String(200), nullable=True),  # the API caller's end-user id (`user`), if given
    sa.Column("message_count", sa.Integer(), nullable=False),
    sa.Column("turn_count", sa.Integer(), nullable=False),
    # Lower-cased transcript text and summary, for the portable `q` search (LIKE).
    sa.Column("search_text", sa.Text(), nullable=False),
    sa.Column("started_at", sa.DateTime(), nullable=False),
    sa.Column("last_activity_at", sa.DateTime(), nullable=False),
    sa.Column("ended_at", sa.DateTime(), nullable=True),
    # What the brain's guardrails remember between turns (verification, lockouts, skill runs): server-side
    # only, so a client can never claim to be verified. Null until the first turn.
    sa.Column("brain_state", sa.JSON(), nullable=True),
    # Voice calls of agents with recordCalls on (migration 0005): the WAV's path under the data directory,
    # `recordings/<org_id>/<conversation_id>.wav`; null when the call was not recorded.
    sa.Column("recording_path", sa.String(300), nullable=True),
    sa.Index("ix_conversations_org_started", "org_id", "started_at", "id"),
    sa.Index("ix_conversations_agent_started", "org_id", "agent_id", "started_at"),
)

conversation_messages = sa.Table(
    "conversation_messages",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("conversation_id", sa.String(40), sa.ForeignKey("conversations.id"), nullable=False),
    sa.Column("turn", sa.Integer(), nullable=False),  # 0 for the greeting, then 1, 2, ... per user message
    sa.Column("role", sa.String(10), nullable=False),  # user | assistant | tool
    sa.Column("content", sa.Text(), nullable=False),
    # What rebuilds the model's context: an assistant message's tool calls, a tool result's call id and name.
    sa.Column("tool_calls", sa.JSON(), nullable=True),
    sa.Column("tool_call_id", sa.String(80), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    # Part of the transcript (user and assistant text); tool traffic is context only.
    sa.Column("visible", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Index("ix_conversation_messages_conversation", "conversation_id", "seq"),
)

conversation_events = sa.Table(
    "conversation_events",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("conversation_id", sa.String(40), sa.ForeignKey("conversations.id"), nullable=False),
    sa.Column("turn", sa.Integer(), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),  # runtime.events.STORED_TYPES
    sa.Column("data", sa.JSON(), nullable=False),
    sa.Column("t_ms", sa.Float(), nullable=False),  # since the start of its turn
    sa.Column("occurred_at", sa.DateTime(), nullable=False),
    sa.Index("ix_conversation_events_conversation", "conversation_id", "seq"),
)

chat_sessions = sa.Table(
    "chat_sessions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("conversation_id", sa.String(40), sa.ForeignKey("conversations.id"), nullable=False),
    sa.Column("draft", sa.Boolean(), nullable=False),
    # The pinned agent: a published version, or (draft mode) the draft compiled when the session started,
    # as canonical JSON, so later edits never change a running session.
    sa.Column("agent_version_id", sa.String(40), nullable=True),
    sa.Column("agent_config", sa.Text(), nullable=True),
    sa.Column("status", sa.String(10), nullable=False),  # active | ended
    # Set while a message is being answered: one turn at a time per session (a stale mark can be taken over).
    sa.Column("turn_started_at", sa.DateTime(), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("ended_at", sa.DateTime(), nullable=True),
    sa.Index("ix_chat_sessions_org_created", "org_id", "created_at", "id"),
)

talk_tokens = sa.Table(
    "talk_tokens",
    metadata,
    # The room the token opens: one in-browser voice session (control_api/talk/tokens.py).
    sa.Column("room", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
    sa.Column("draft", sa.Boolean(), nullable=False),  # the draft compiled at connect time, never billed
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 of the secret token
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.Column("redeemed_at", sa.DateTime(), nullable=True),  # single use: set by the one connect it allows
    sa.Column("created_at", sa.DateTime(), nullable=False),
)
