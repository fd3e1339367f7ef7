"""Wraparound arithmetic for RTP sequence numbers (16 bit) and timestamps (32 bit).

This is the only place modular arithmetic lives (RFC 3550 §A.1, RFC 1982 serial numbers); every other
module compares sequence numbers and timestamps through these helpers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SEQ_MOD",
    "TS_MOD",
    "SequenceExtender",
    "seq_add",
    "seq_diff",
    "seq_gt",
    "seq_lt",
    "ts_add",
    "ts_diff",
    "ts_gt",
    "ts_lt",
]

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


def _diff(a: int, b: int, mod: int) -> int:
    """Signed distance from ``b`` to ``a`` in ``(-mod/2, mod/2]``."""
    d = (a - b) % mod
    return d - mod if d > mod // 2 else d


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**16."""
    return (a + n) % SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 16-bit sequence numbers (65535 → 0 is +1)."""
    return _diff(a, b, SEQ_MOD)


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes before ``b`` in 16-bit serial-number order."""
    return seq_diff(a, b) < 0


def seq_gt(a: int, b: int) -> bool:
    """``a`` comes after ``b`` in 16-bit serial-number order."""
    return seq_diff(a, b) > 0


def ts_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) % TS_MOD


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 32-bit RTP timestamps."""
    return _diff(a, b, TS_MOD)


def ts_lt(a: int, b: int) -> bool:
    """``a`` comes before ``b`` in 32-bit serial-number order."""
    return ts_diff(a, b) < 0


def ts_gt(a: int, b: int) -> bool:
    """``a`` comes after ``b`` in 32-bit serial-number order."""
    return ts_diff(a, b) > 0


@dataclass
class SequenceExtender:
    """Extends 16-bit sequence numbers to a monotonic 64-bit counter (roll-over count × 2**16 + seq).

    Each ``extend(seq)`` returns the extended value nearest to the highest seen so far, so late
    packets from before a wrap map to the previous cycle and never move ``highest`` back (a packet
    older than the very first one maps below it, possibly to a negative value).
    """

    highest: int | None = None

    def extend(self, seq: int) -> int:
        if not 0 <= seq < SEQ_MOD:
            raise ValueError(f"sequence number out of range: {seq}")
        if self.highest is None:
            self.highest = seq
            return seq
        ext = self.highest + seq_diff(seq, self.highest % SEQ_MOD)
        if ext > self.highest:
            self.highest = ext
        return ext

    def delta(self, seq: int) -> int:
        """Signed distance from the highest sequence number seen to ``seq`` (0 before any)."""
        return 0 if self.highest is None else seq_diff(seq, self.highest % SEQ_MOD)

    @property
    def cycles(self) -> int:
        """Roll-over count (the number of times the sequence number wrapped)."""
        return 0 if self.highest is None else self.highest >> 16
