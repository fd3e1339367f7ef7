"""Keypad entries: `#` completes, a pause completes, `*` starts over, a lone `#` passes through."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runtime.voice.keypad import MAX_DIGITS, KeypadCollector, as_user_text


def test_hash_completes_the_entry() -> None:
    keys = KeypadCollector()
    assert [keys.press(d, 0.1 * i) for i, d in enumerate("4711")] == [None] * 4
    assert keys.press("#", 1.0) == "4711"
    assert keys.digits == [] and keys.deadline is None


def test_a_pause_completes_the_entry_and_not_before() -> None:
    keys = KeypadCollector(pause_s=2.5)
    keys.press("1", 0.0)
    keys.press("2", 1.0)
    assert keys.deadline == 3.5
    assert keys.expire(3.4) is None
    assert keys.expire(3.5) == "12"
    assert keys.expire(10.0) is None


def test_star_starts_over_and_a_lone_hash_is_passed_on() -> None:
    keys = KeypadCollector()
    keys.press("9", 0.0)
    assert keys.press("*", 0.5) is None
    keys.press("3", 1.0)
    assert keys.press("#", 1.5) == "3"
    assert keys.press("#", 2.0) == "#"
    assert as_user_text("3") == "(keypad) 3"


@given(st.lists(st.sampled_from("0123456789"), min_size=MAX_DIGITS, max_size=MAX_DIGITS * 2))
def test_an_endless_entry_is_cut_at_the_limit(digits: list[str]) -> None:
    keys = KeypadCollector()
    entries = [e for e in (keys.press(d, 0.0) for d in digits) if e is not None]
    assert entries and all(len(e) == MAX_DIGITS for e in entries)
    assert len(keys.digits) < MAX_DIGITS
