"""Wraparound helpers: 16-bit sequence numbers, 32-bit timestamps, the 64-bit extended counter."""

from hypothesis import given
from hypothesis import strategies as st

from telephony.rtp.seq import SEQ_MOD, SequenceExtender, seq_add, seq_diff, seq_gt, seq_lt, ts_diff, ts_lt

seqs = st.integers(0, SEQ_MOD - 1)


def test_wrap_65535_to_0() -> None:
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_lt(65535, 0)
    assert seq_gt(0, 65535)
    assert seq_add(65535, 1) == 0
    assert ts_diff(0, 0xFFFFFF60) == 160
    assert ts_lt(0xFFFFFF60, 0)


@given(seqs, st.integers(-(SEQ_MOD // 2) + 1, SEQ_MOD // 2))
def test_seq_diff_inverts_add(a: int, n: int) -> None:
    assert seq_diff(seq_add(a, n), a) == n


@given(seqs, seqs)
def test_seq_order_antisymmetric(a: int, b: int) -> None:
    assert seq_diff(a, b) == -seq_diff(b, a) or abs(seq_diff(a, b)) == SEQ_MOD // 2
    assert not (seq_lt(a, b) and seq_lt(b, a))


def test_extender_counts_cycles() -> None:
    ext = SequenceExtender()
    values = [ext.extend(s) for s in (65533, 65534, 65535, 0, 1)]
    assert values == [65533, 65534, 65535, 65536, 65537]
    assert ext.cycles == 1
    # a late packet from before the wrap maps to the old cycle and does not move highest back
    assert ext.extend(65534) == 65534
    assert ext.highest == 65537


@given(seqs, st.lists(st.integers(1, 1000), max_size=300))
def test_extender_follows_forward_steps(start: int, steps: list[int]) -> None:
    ext = SequenceExtender()
    expected = ext.extend(start)
    for step in steps:
        expected += step
        assert ext.extend(expected % SEQ_MOD) == expected
    assert ext.highest == expected
