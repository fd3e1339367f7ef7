"""Splitting documents into passages small enough to embed and specific enough to retrieve.

A passage is at most `max_chars` characters (about 120-200 word pieces, under the embedder's 256-piece
window). Text is split on blank lines into blocks, blocks into sentences, and sentences are packed
greedily; each passage after the first in a run repeats the previous passage's last sentence, so an
answer that straddles a boundary is still retrievable whole. A sentence longer than `max_chars` is cut
on word boundaries. An FAQ becomes one passage per question and answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_CHARS = 800
MAX_CHUNKS = 5000

_BLOCK_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


@dataclass(frozen=True)
class Chunk:
    position: int
    text: str


def clean(text: str) -> str:
    """Collapse runs of spaces, trim each line, drop runs of blank lines beyond one."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _sentences(block: str) -> list[str]:
    flat = " ".join(part.strip() for part in block.split("\n") if part.strip())
    return [s.strip() for s in _SENTENCE_END.split(flat) if s.strip()]


def split_sentences(passage: str) -> list[str]:
    """A passage's sentences, each line on its own (a FAQ's question and its answer), whitespace collapsed."""
    return [" ".join(s.split()) for line in passage.split("\n") for s in _SENTENCE_END.split(line) if s.strip()]


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    words = sentence.split(" ")
    current = ""
    for word in words:
        while len(word) > max_chars:  # a single unbroken run (a URL, a hash): cut it hard
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        candidate = f"{current} {word}".strip()
        if len(candidate) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def _pack(sentences: Sequence[str], max_chars: int) -> list[str]:
    passages: list[str] = []
    current: list[str] = []
    size = 0
    for sentence in sentences:
        extra = len(sentence) + (1 if current else 0)
        if current and size + extra > max_chars:
            passages.append(" ".join(current))
            overlap = current[-1]
            current, size = ([overlap], len(overlap)) if len(overlap) + 1 + len(sentence) <= max_chars else ([], 0)
            extra = len(sentence) + (1 if current else 0)
        current.append(sentence)
        size += extra
    if current:
        passages.append(" ".join(current))
    return passages


def chunk_text(text: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    """Passages of `text`, in document order; small neighbouring blocks share a passage."""
    sentences: list[str] = []
    for block in _BLOCK_BREAK.split(clean(text)):
        for sentence in _sentences(block):
            sentences.extend(_cut_long(sentence, max_chars))
    passages = _pack(sentences, max_chars)
    return [Chunk(i, p) for i, p in enumerate(passages[:MAX_CHUNKS])]


def join_passages(passages: Sequence[str]) -> str:
    """A source's text back from its passages, in order: the sentence a passage repeats from the one before
    it (see `_pack`) is given once; passages go on new lines."""
    out: list[str] = []
    for passage in passages:
        previous = split_sentences(out[-1]) if out else []
        overlap = previous[-1] if previous else ""
        if overlap and passage.startswith(overlap + " "):
            passage = passage[len(overlap) + 1 :]
        elif overlap and passage == overlap:
            continue
        out.append(passage)
    return "\n".join(out)


def faq_text(items: Iterable[tuple[str, str]]) -> str:
    """The FAQ as one readable document (what GET on the source shows as its content)."""
    return "\n\n".join(f"Q: {q.strip()}\nA: {a.strip()}" for q, a in items)


def chunk_faq(items: Sequence[tuple[str, str]], max_chars: int = MAX_CHARS) -> list[Chunk]:
    """One passage per question and answer; a long answer continues in passages that repeat the question."""
    chunks: list[Chunk] = []
    for question, answer in items:
        q = " ".join(question.split())
        head = f"Q: {q}\nA: "
        budget = max(max_chars - len(head), 200)
        for piece in chunk_text(answer, budget):
            chunks.append(Chunk(len(chunks), head + piece.text))
    return chunks[:MAX_CHUNKS]
