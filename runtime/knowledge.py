"""What an agent knows: the frozen knowledge snapshot of a compiled agent, and the read-side contracts.

Publishing compiles the draft's indexed knowledge sources into a `KnowledgeSnapshot`: for each source, the
*generation* of its index that was current then, with the hash of the content it was built from. A
refresh indexes a new generation for the draft; a published version keeps searching the generations it
names, so what a live call retrieves changes only when someone publishes.

The control plane implements both Protocols over its database; this package never imports it:

    KnowledgeSearch.search(snapshot, query, top_k)   passages for an utterance, best first
    KnowledgeSearch.contents(snapshot, max_chars)    all of it, when it is that small (a call's prompt holds it)
    GapRecorder.record_gap(org, agent, question, top_score, conversation_id)
                                                     a question the agent could not answer
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# A retrieved passage scoring below this (cosine similarity, -1..1) is not evidence of an answer; the
# runtime should treat such a turn as a knowledge gap.
DEFAULT_MIN_SCORE = 0.35


@dataclass(frozen=True)
class KnowledgeSourceRef:
    source_id: str
    label: str
    kind: str  # text | faq | url | file
    generation: int
    content_hash: str

    def to_config(self) -> dict[str, Any]:
        return {
            "sourceId": self.source_id,
            "label": self.label,
            "kind": self.kind,
            "generation": self.generation,
            "contentHash": self.content_hash,
        }

    @classmethod
    def from_config(cls, value: Mapping[str, Any]) -> KnowledgeSourceRef:
        return cls(
            str(value["sourceId"]),
            str(value["label"]),
            str(value["kind"]),
            int(value["generation"]),
            str(value["contentHash"]),
        )


@dataclass(frozen=True)
class KnowledgeSnapshot:
    sources: tuple[KnowledgeSourceRef, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.sources)

    def only(self, source_ids: Sequence[str]) -> KnowledgeSnapshot:
        wanted = set(source_ids)
        return KnowledgeSnapshot(tuple(s for s in self.sources if s.source_id in wanted))

    def to_config(self) -> list[dict[str, Any]]:
        return [s.to_config() for s in self.sources]

    @classmethod
    def from_config(cls, value: Sequence[Mapping[str, Any]] | None) -> KnowledgeSnapshot:
        return cls(tuple(KnowledgeSourceRef.from_config(s) for s in value or ()))


EMPTY_SNAPSHOT = KnowledgeSnapshot()


@dataclass(frozen=True)
class RetrievedChunk:
    source_id: str
    source_label: str
    text: str
    score: float  # cosine similarity of the query and the passage (with `focus_chars`: or its best sentence)
    position: int = 0  # the passage's place in its source
    focus: str = ""  # with `focus_chars`: the passage's sentences kept (in their order), "" for none


@dataclass(frozen=True)
class KnowledgeText:
    """One source's whole text, as the snapshot's generation of it holds it."""

    source_id: str
    source_label: str
    text: str


class KnowledgeSearch(Protocol):
    async def search(
        self, snapshot: KnowledgeSnapshot, query: str, top_k: int, *, focus_chars: int = 0
    ) -> list[RetrievedChunk]:
        """The `top_k` passages of the snapshot's sources most similar to `query`, best first. With
        `focus_chars`, each passage's `focus` holds those of its sentences that are, over all the passages
        returned, the ones most similar to `query`, best first until `focus_chars` in all, and its `score` is
        its best sentence's when that is higher."""
        ...

    async def contents(self, snapshot: KnowledgeSnapshot, max_chars: int) -> list[KnowledgeText] | None:
        """The whole text of each of the snapshot's sources (in the snapshot's order, empty ones left out)
        when all of it comes to at most `max_chars` characters; None when it is more."""
        ...


class GapRecorder(Protocol):
    async def record_gap(
        self,
        org_id: str,
        agent_id: str,
        question: str,
        top_score: float | None,
        conversation_id: str | None = None,
    ) -> None:
        """Keep a question the agent could not answer for the agent's knowledge-gaps list."""
        ...
