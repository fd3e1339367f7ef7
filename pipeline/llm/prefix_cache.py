"""Saved KV states of the local model, found again by longest common token prefix.

Every prompt of one agent version starts with the same system-and-tools prefix, and every turn of one
conversation starts with that conversation's previous turn. After each turn the engine saves the model's
KV state keyed by the tokens it holds; before the next turn it loads the entry sharing the longest
prefix with the new prompt (when that beats what the model already holds) and evaluates only the rest.
So alternating conversations do not thrash: each finds its own last state, and a new conversation finds
the shared prefix inside any of them.

Each entry may have an owner (the conversation that made it): `drop_owner` forgets a finished
conversation's states at once instead of leaving them to age out. Entries without an owner are the frozen
prefixes every conversation shares; an entry only supersedes entries of its own owner, so a conversation's
state never takes a shared prefix down with it.

When a conversation outgrows the context, its prompt drops the oldest messages, and from then on no entry
shares more than the frozen prefix with it. `best_cut` finds the entry that matches it once one run of its
tokens is cut out (those messages); the engine cuts them out of the KV state and shifts the rest down
(llama.cpp's context shift) instead of evaluating the whole conversation again.

Sans-I/O: tokens and opaque state bytes in, (common length, entry) out. Bounded by entry count and
bytes, least recently used evicted first. An entry whose tokens are a strict prefix of a new entry's is
replaced by it: anything the old one would match, the new one matches at least as far.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Tokens = npt.NDArray[np.int32]


def as_tokens(tokens: Sequence[int] | Tokens) -> Tokens:
    return np.asarray(tokens, dtype=np.int32)


def common_prefix(a: Tokens, b: Tokens) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


@dataclass(frozen=True)
class SavedState:
    tokens: Tokens
    data: bytes
    owner: str | None = None


@dataclass(frozen=True)
class Cut:
    """`entry` matches `length` tokens of a prompt once its tokens `[at, at + width)` are cut out."""

    entry: SavedState
    at: int
    width: int
    length: int

    def tokens(self) -> Tokens:
        """The entry's tokens without the cut."""
        return np.concatenate([self.entry.tokens[: self.at], self.entry.tokens[self.at + self.width :]])


class PrefixStateCache:
    def __init__(self, max_bytes: int = 256 << 20, max_entries: int = 32) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, SavedState] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def best(self, tokens: Tokens) -> tuple[int, SavedState] | None:
        """The entry sharing the longest prefix with `tokens`, and that length (None when nothing shares)."""
        best_len, best_key = 0, None
        for key, entry in self._entries.items():
            length = common_prefix(entry.tokens, tokens)
            if length > best_len:
                best_len, best_key = length, key
        if best_key is None:
            return None
        self._entries.move_to_end(best_key)
        return best_len, self._entries[best_key]

    def best_cut(self, tokens: Tokens) -> Cut | None:
        """The entry and cut that match `tokens` furthest: the entry shares `at` tokens with them, and after
        its next `width` tokens, more again (a run of them dropped from the middle, as a conversation's oldest
        messages leave a full context). None when no cut matches anything after the shared part."""
        best: Cut | None = None
        for entry in self._entries.values():
            at = common_prefix(entry.tokens, tokens)
            if at >= len(tokens) or at + 1 >= len(entry.tokens):
                continue
            for resume in np.flatnonzero(entry.tokens[at + 1 :] == tokens[at]) + at + 1:
                length = at + common_prefix(entry.tokens[resume:], tokens[at:])
                if best is None or length > best.length:
                    best = Cut(entry, at, int(resume) - at, length)
        if best is not None:
            self._entries.move_to_end(best.entry.tokens.tobytes())
        return best

    def put(self, tokens: Tokens, data: bytes, owner: str | None = None) -> None:
        if len(data) > self.max_bytes or len(tokens) == 0:
            return
        for key, entry in list(self._entries.items()):
            extended = len(entry.tokens) <= len(tokens) and common_prefix(entry.tokens, tokens) == len(entry.tokens)
            if extended and (entry.owner == owner or key == tokens.tobytes()):
                self._drop(key)  # superseded (or the same tokens again)
        entry = SavedState(tokens.copy(), data, owner)
        self._entries[tokens.tobytes()] = entry
        self._bytes += len(data)
        while self._entries and (self._bytes > self.max_bytes or len(self._entries) > self.max_entries):
            self._drop(next(iter(self._entries)))

    def drop_owner(self, owner: str) -> int:
        """Forget every entry `owner` made; returns how many."""
        keys = [key for key, entry in self._entries.items() if entry.owner == owner]
        for key in keys:
            self._drop(key)
        return len(keys)

    def _drop(self, key: bytes) -> None:
        self._bytes -= len(self._entries.pop(key).data)
