"""Knowledge for a turn: search, keep what scores above the threshold, say it to the model, spot gaps.

Each user turn is searched automatically (top 3). Passages scoring at least `DEFAULT_MIN_SCORE` go to the
model as a system message placed just before the user's message, for that turn only. A turn is a
knowledge gap when nothing scored that high and the message looks like a question (`looks_like_question`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pipeline.llm.types import ChatMessage
from runtime.brain.text import looks_like_question
from runtime.knowledge import DEFAULT_MIN_SCORE, KnowledgeSearch, KnowledgeSnapshot, RetrievedChunk

log = logging.getLogger(__name__)
TOP_K = 3


@dataclass(frozen=True)
class Retrieval:
    chunks: tuple[RetrievedChunk, ...]  # what the search returned, best first
    min_score: float = DEFAULT_MIN_SCORE
    error: str | None = None

    @property
    def passages(self) -> tuple[RetrievedChunk, ...]:
        """The chunks good enough to be evidence."""
        return tuple(c for c in self.chunks if c.score >= self.min_score)

    @property
    def top_score(self) -> float | None:
        return max((c.score for c in self.chunks), default=None)


async def retrieve(
    search: KnowledgeSearch, snapshot: KnowledgeSnapshot, query: str, *, timeout_s: float, top_k: int = TOP_K
) -> Retrieval:
    try:
        async with asyncio.timeout(timeout_s):
            chunks = await search.search(snapshot, query, top_k)
    except TimeoutError:
        return Retrieval((), error="the knowledge search did not answer in time")
    except Exception as exc:  # a failing search must not end the turn
        log.warning("knowledge search failed: %r", exc)
        return Retrieval((), error=f"the knowledge search failed: {exc}")
    return Retrieval(tuple(sorted(chunks, key=lambda c: c.score, reverse=True)[:top_k]))


def passages_json(retrieval: Retrieval) -> list[dict[str, Any]]:
    return [
        {"sourceId": c.source_id, "source": c.source_label, "text": c.text, "score": round(c.score, 4),
         "used": c.score >= retrieval.min_score}
        for c in retrieval.chunks
    ]


def context_message(passages: tuple[RetrievedChunk, ...]) -> ChatMessage:
    lines = ["Knowledge passages for the customer's next message (use them if they answer it; never "
             "contradict them):"]
    lines += [f"[{n}] ({c.source_label}) {' '.join(c.text.split())}" for n, c in enumerate(passages, start=1)]
    return ChatMessage("system", "\n".join(lines))


def tool_result(retrieval: Retrieval) -> dict[str, Any]:
    passages = [{"source": c.source_label, "text": c.text} for c in retrieval.passages]
    if passages:
        return {"passages": passages}
    return {"passages": [], "note": "nothing relevant found: say you do not know and offer to take a message"}


def is_gap(retrieval: Retrieval, text: str) -> bool:
    return retrieval.error is None and not retrieval.passages and looks_like_question(text)
