"""Knowledge for a turn: search, keep what scores above the threshold, say it to the model, spot gaps.

Each user turn is searched automatically (top 3). Passages scoring at least `DEFAULT_MIN_SCORE` go to the
model as a system message placed just before the user's message; later prompts keep it there (the brain's
`_heard`, so a model's prefix cache serves them), the transcript never holds it. A turn is a
knowledge gap when nothing scored that high and the message looks like a question (`looks_like_question`).

On a call, the message holds only the passages' sentences nearest the caller's words, `VOICE_KNOWLEDGE_CHARS`
in all (`focus_chars`, ranked by the search's own embeddings): the local model reads its prompt at ~10 ms a
token here, and three whole passages (up to 800 characters each) kept the caller waiting 1.9-2.9 s for the
first word of a reply (measured, Qwen2.5 0.5B, 2 cores), 0.3 s without knowledge. Chat keeps whole passages.
Knowledge of at most `PROMPT_KNOWLEDGE_CHARS` is not searched for the model on a call at all: it is in the
system prompt whole, and the turn's search runs after the reply, for the receipt and the gaps only.
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
# ~40 tokens: one or two sentences. 300 (~75 tokens, the passage's three best sentences) kept a caller
# waiting 2.2 s (p50) for the first word in the voice benchmark, on a machine where a plain turn took 0.65 s.
VOICE_KNOWLEDGE_CHARS = 160
# On a call, knowledge up to this size goes whole into the system prompt (AgentBrain._load_knowledge), ~300
# tokens: evaluated once per agent version and process (the prompt is a cached prefix), then free per turn.
PROMPT_KNOWLEDGE_CHARS = 1200
# A shorter heading ("Facts for the next message:", 7 tokens for these 27) was read out by the 0.5B model as
# its reply, with the passage after it, in 5 of 20 benchmark turns.
HEADING = "Knowledge passages for the customer's next message (use them if they answer it; never contradict them):"
# A reply that opens with the heading is the model reading its prompt out (seen with the 0.5B model on calls,
# in 2 of 20 benchmark turns): the brain answers with the passages' sentences instead (`AgentBrain._retrieve`).
HEADING_ECHO = "Knowledge passages for the customer"


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
    search: KnowledgeSearch,
    snapshot: KnowledgeSnapshot,
    query: str,
    *,
    timeout_s: float,
    top_k: int = TOP_K,
    focus_chars: int = 0,
) -> Retrieval:
    try:
        async with asyncio.timeout(timeout_s):
            chunks = await search.search(snapshot, query, top_k, focus_chars=focus_chars)
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


def context_message(passages: tuple[RetrievedChunk, ...], *, focused: bool = False) -> ChatMessage:
    """The passages for the model; `focused`: only their sentences kept by the search (`RetrievedChunk.focus`),
    and none of a passage that kept none."""
    texts = [(c.source_label, c.focus if focused else c.text) for c in passages]
    kept = [(label, text) for label, text in texts if text.strip()]
    lines = [HEADING] + [f"[{n}] ({label}) {' '.join(text.split())}" for n, (label, text) in enumerate(kept, 1)]
    return ChatMessage("system", "\n".join(lines))


def tool_result(retrieval: Retrieval) -> dict[str, Any]:
    passages = [{"source": c.source_label, "text": c.text} for c in retrieval.passages]
    if passages:
        return {"passages": passages}
    return {"passages": [], "note": "nothing relevant found: say you do not know and offer to take a message"}


def is_gap(retrieval: Retrieval, text: str) -> bool:
    return retrieval.error is None and not retrieval.passages and looks_like_question(text)
