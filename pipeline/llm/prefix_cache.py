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
