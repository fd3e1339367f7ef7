"""The JSON the API answers with for conversations, their transcript turns and receipt events."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from control_api.clock import iso


def conversation_resource(row: sa.Row[Any]) -> dict[str, Any]:
    duration_ms = None
    if row.ended_at is not None:
        duration_ms = int((row.ended_at - row.started_at).total_seconds() * 1000)
    return {
        "id": row.id,
        "agentId": row.agent_id,
        "channel": row.channel,
        "draft": bool(row.draft),
        "agentVersionId": row.agent_version_id,
        "agentVersion": row.agent_version_number,
        "configHash": row.config_hash,
        "status": row.status,
        "outcome": row.outcome,
        "summary": row.summary,
        "user": row.end_user,
        "messageCount": row.message_count,
        "turnCount": row.turn_count,
        "startedAt": iso(row.started_at),
        "lastActivityAt": iso(row.last_activity_at),
        "endedAt": iso(row.ended_at),
        "durationMs": duration_ms,
        "hasRecording": row.recording_path is not None,  # GET /conversations/{id}/audio for its signed URL
    }


def message_resource(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "role": row.role,
        "content": row.content,
        "turn": row.turn,
        "createdAt": iso(row.created_at),
    }


def event_resource(row: sa.Row[Any], index: int) -> dict[str, Any]:
    """One receipt event; `index` is its place in the conversation's receipt (0-based)."""
    return {
        **(row.data or {}),
        "index": index,
        "type": row.type,
        "turn": row.turn,
        "tMs": round(float(row.t_ms), 1),
        "at": iso(row.occurred_at),
    }
