"""Knowledge gaps: questions the agent could not answer, deduplicated, counted, and ranked.

The runtime calls `record_gap` when retrieval found nothing good enough (see
`runtime.knowledge.DEFAULT_MIN_SCORE`). Repeats of a question (same words, ignoring case, punctuation and
spacing) land on one row. Until an agent has `RANKING_FLOOR` recorded questions the list is
`collecting`; from then on it is `ready` and ranked: each gap gets a `gapId`, a `rankScore` (occurrences
weighted by recency, halving every `HALF_LIFE_DAYS`) and a `classification`:

    no_coverage        nothing in the knowledge came close (best score under NO_COVERAGE_BELOW)
    partial_coverage   something related exists but did not answer it

Operators curate a gap to in_progress, dismissed or back to open; `covered` is the system's to set.
A question asked again after it was marked covered reopens the gap.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_api.clock import Clock, iso
from control_api.db.tables import agents, knowledge_gaps
from control_api.errors import NotFound
from control_api.ids import new_id

log = logging.getLogger("flowyte.knowledge")

RANKING_FLOOR = 10
HALF_LIFE_DAYS = 7.0
NO_COVERAGE_BELOW = 0.2
CURATED_STATUSES = ("open", "in_progress", "dismissed")
STATUSES = (*CURATED_STATUSES, "covered")

_NOT_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")

G = knowledge_gaps


def question_key(question: str) -> str:
    text = unicodedata.normalize("NFKC", question).casefold()
    return _SPACE.sub(" ", _NOT_WORD.sub(" ", text)).strip()[:300]


async def record_gap(
    engine: AsyncEngine,
    clock: Clock,
    org_id: str,
    agent_id: str,
    question: str,
    top_score: float | None,
    conversation_id: str | None = None,
) -> None:
    key = question_key(question)
    if not key:
        return
    now = clock.now()
    async with engine.begin() as conn:
        owner = await conn.scalar(sa.select(agents.c.org_id).where(agents.c.id == agent_id))
        if owner != org_id:
            log.warning("knowledge gap for unknown agent %s of organization %s dropped", agent_id, org_id)
            return
        for _ in range(3):
            updated = await conn.execute(
                G.update()
                .where(G.c.agent_id == agent_id, G.c.question_key == key)
                .values(
                    occurrences=G.c.occurrences + 1, last_top_score=top_score, last_seen_at=now, updated_at=now,
                    last_conversation_id=conversation_id,
                    status=sa.case((G.c.status == "covered", "open"), else_=G.c.status),
                )
            )
            if updated.rowcount:
                return
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        G.insert().values(
                            id=new_id("gap"), org_id=org_id, agent_id=agent_id, question_key=key,
                            question=" ".join(question.split())[:1000], occurrences=1, last_top_score=top_score,
                            last_conversation_id=conversation_id, status="open", first_seen_at=now,
                            last_seen_at=now, updated_at=now,
                        )
                    )
                return
            except IntegrityError:
                continue  # someone recorded the same question first: count ours on their row


def rank_score(occurrences: int, last_seen: datetime, now: datetime) -> float:
    age_days = max((now - last_seen).total_seconds(), 0.0) / 86400.0
    score: float = occurrences * 0.5 ** (age_days / HALF_LIFE_DAYS)
    return round(score, 4)


def classify(top_score: float | None) -> str:
    return "no_coverage" if top_score is None or top_score < NO_COVERAGE_BELOW else "partial_coverage"


def _gap(row: sa.Row[Any], ranked: bool, now: datetime) -> dict[str, Any]:
    gap: dict[str, Any] = {
        "question": row.question,
        "occurrences": int(row.occurrences),
        "firstSeenAt": iso(row.first_seen_at),
        "lastSeenAt": iso(row.last_seen_at),
        "topScore": None if row.last_top_score is None else round(float(row.last_top_score), 4),
        "status": row.status,
    }
    if ranked:
        gap = {
            "gapId": row.id, **gap, "rankScore": rank_score(int(row.occurrences), row.last_seen_at, now),
            "classification": classify(row.last_top_score),
        }
    return gap


async def list_gaps(
    conn: AsyncConnection, org_id: str, agent_id: str, *, status: str | None, limit: int, now: datetime
) -> dict[str, Any]:
    where = [G.c.org_id == org_id, G.c.agent_id == agent_id]
    total = int(await conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(G.c.occurrences), 0)).where(*where)) or 0)
    ranked = total >= RANKING_FLOOR
    if status is not None:
        where.append(G.c.status == status)
    rows = (await conn.execute(sa.select(G).where(*where))).all()
    gaps = [_gap(r, ranked, now) for r in rows]
    if ranked:
        gaps.sort(key=lambda g: (-g["rankScore"], -g["occurrences"], g["question"]))
    else:  # most asked first, then most recently asked
        gaps.sort(key=lambda g: g["lastSeenAt"] or "", reverse=True)
        gaps.sort(key=lambda g: -g["occurrences"])
    return {
        "dataState": "ready" if ranked else "collecting",
        "ranked": ranked,
        "totalOccurrences": total,
        "gaps": gaps[:limit],
    }


async def set_status(
    conn: AsyncConnection, org_id: str, agent_id: str, gap_id: str, status: str, now: datetime
) -> dict[str, Any]:
    result = await conn.execute(
        G.update()
        .where(G.c.org_id == org_id, G.c.agent_id == agent_id, G.c.id == gap_id)
        .values(status=status, updated_at=now)
    )
    if result.rowcount != 1:
        raise NotFound(f"knowledge gap {gap_id} not found")
    row = (await conn.execute(sa.select(G).where(G.c.id == gap_id))).one()
    return _gap(row, True, now)
