"""Retrieval: brute-force cosine similarity over the passages of a snapshot's generations.

Embeddings are unit vectors, so similarity is one matrix-vector product per generation. A generation is
immutable once written, so its matrix is cached in memory (least recently used first out, bounded in
bytes) and a published version and the draft share the generations they have in common.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from control_api.knowledge import repository as repo
from pipeline.knowledge.chunking import join_passages, split_sentences
from pipeline.knowledge.embedder import DIMENSION, Embedder, Vectors, from_bytes
from runtime.knowledge import KnowledgeSnapshot, KnowledgeText, RetrievedChunk

CACHE_BYTES = 64 * 1024 * 1024
MAX_TOP_K = 50


@dataclass(frozen=True)
class _Generation:
    texts: tuple[str, ...]
    positions: tuple[int, ...]
    matrix: Vectors  # (passages, 384) float32

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes) + sum(len(t) for t in self.texts)


class KnowledgeIndex:
    def __init__(self, engine: AsyncEngine, embedder: Embedder, cache_bytes: int = CACHE_BYTES) -> None:
        self._engine = engine
        self._embedder = embedder
        self._cache: OrderedDict[tuple[str, int], _Generation] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0

    async def _generations(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], _Generation]:
        found = {k: self._cache[k] for k in keys if k in self._cache}
        for key in found:
            self._cache.move_to_end(key)
        missing = [k for k in keys if k not in found]
        if missing:
            async with self._engine.connect() as conn:
                loaded = await repo.generation_passages(conn, missing)
            for key, passages in loaded.items():
                matrix = (
                    np.stack([from_bytes(e) for _, _, e in passages])
                    if passages
                    else np.zeros((0, DIMENSION), dtype=np.float32)
                )
                generation = _Generation(
                    tuple(t for _, t, _ in passages), tuple(p for p, _, _ in passages), matrix
                )
                found[key] = generation
                self._remember(key, generation)
        return found

    def _remember(self, key: tuple[str, int], generation: _Generation) -> None:
        if generation.nbytes > self._cache_bytes:
            return
        self._cache[key] = generation
        self._cached_bytes += generation.nbytes
        while self._cached_bytes > self._cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= evicted.nbytes

    async def search(
        self, snapshot: KnowledgeSnapshot, query: str, top_k: int, *, focus_chars: int = 0
    ) -> list[RetrievedChunk]:
        top_k = max(1, min(top_k, MAX_TOP_K))
        if not snapshot or not query.strip():
            return []
        keys = [(s.source_id, s.generation) for s in snapshot.sources]
        vector, generations = await asyncio.gather(
            asyncio.to_thread(self._embedder.encode_one, query), self._generations(keys)
        )
        candidates: list[RetrievedChunk] = []
        for source in snapshot.sources:
            generation = generations[(source.source_id, source.generation)]
            if not generation.texts:
                continue
            scores = generation.matrix @ vector
            best = np.argsort(-scores)[:top_k]
            candidates.extend(
                RetrievedChunk(
                    source.source_id, source.label, generation.texts[i], round(float(scores[i]), 4),
                    generation.positions[i],
                )
                for i in best
            )
        candidates.sort(key=lambda c: (-c.score, c.source_id, c.position))
        found = candidates[:top_k]
        if focus_chars > 0 and found:
            found = await asyncio.to_thread(self._focus, found, vector, focus_chars)
        return found

    async def contents(self, snapshot: KnowledgeSnapshot, max_chars: int) -> list[KnowledgeText] | None:
        """Each source's text back from its passages (`join_passages`), when all of it fits `max_chars`."""
        generations = await self._generations([(s.source_id, s.generation) for s in snapshot.sources])
        out: list[KnowledgeText] = []
        size = 0
        for source in snapshot.sources:
            text = join_passages(generations[(source.source_id, source.generation)].texts)
            size += len(text)
            if size > max_chars:
                return None
            if text.strip():
                out.append(KnowledgeText(source.source_id, source.label, text))
        return out

    def _focus(self, chunks: list[RetrievedChunk], query: Vectors, budget: int) -> list[RetrievedChunk]:
        """Each chunk with its `focus`: the sentences of all `chunks` most similar to the query, best first
        while they fit `budget` characters in all (the best one always), each kept in its passage's order.

        And with its score raised to its best sentence's when that is higher: the caller gets sentences, so
        a passage is as good as its best one. A passage of many topics scores low as a whole against a short
        question (the demo pizzeria's one passage of hours, menu and delivery: 0.20 for "How long does
        delivery take?", under `DEFAULT_MIN_SCORE`, while its delivery sentence scores 0.58)."""
        sentences = [(i, text) for i, chunk in enumerate(chunks) for text in split_sentences(chunk.text)]
        scores = self._embedder.encode([text for _, text in sentences]) @ query
        best = [max((float(scores[k]) for k, (j, _) in enumerate(sentences) if j == i), default=0.0)
                for i in range(len(chunks))]  # fmt: skip
        kept: set[int] = set()
        used = 0
        for k in np.argsort(-scores):
            size = len(sentences[k][1]) + 1
            if kept and used + size > budget:
                continue  # a shorter one further down may still fit
            kept.add(int(k))
            used += size
        return [
            replace(
                chunk, focus=" ".join(text for k, (j, text) in enumerate(sentences) if j == i and k in kept),
                score=max(chunk.score, round(best[i], 4)),
            )
            for i, chunk in enumerate(chunks)
        ]  # fmt: skip
