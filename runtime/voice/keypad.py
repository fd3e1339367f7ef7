"""Keypad digits as caller input (docs/channels/dtmf.md): digits become an ordinary user turn.

A caller keys a value (an order number, a menu choice, a PIN) and the agent receives it like a spoken
answer. Digits collect into one entry that is complete when the caller presses `#`, or after a pause
(`pause_s`, 2.5 s by default: long enough to find the next key, short enough not to feel stuck). `*` clears
what was keyed so far (the usual "start over" key). A lone `#` with nothing before it is passed on as "#":
some menus ask for it. Sans-I/O: `now` comes in, `deadline` tells the caller when to call `expire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PAUSE_S = 2.5
MAX_DIGITS = 32


@dataclass
class KeypadCollector:
    pause_s: float = DEFAULT_PAUSE_S
    digits: list[str] = field(default_factory=list)
    deadline: float | None = None

    def press(self, digit: str, now: float) -> str | None:
        """One key; returns the complete entry when this key completes it."""
        if digit == "#":
            entry = "".join(self.digits) or "#"
            self._reset()
            return entry
        if digit == "*":
            self._reset()
            return None
        self.digits.append(digit)
        self.deadline = now + self.pause_s
        if len(self.digits) >= MAX_DIGITS:
            return self._flush()
        return None

    def expire(self, now: float) -> str | None:
        """The entry, if the caller has paused long enough."""
        if self.deadline is not None and now >= self.deadline and self.digits:
            return self._flush()
        return None

    def _flush(self) -> str:
        entry = "".join(self.digits)
        self._reset()
        return entry

    def _reset(self) -> None:
        self.digits.clear()
        self.deadline = None


def as_user_text(entry: str) -> str:
    """How a keyed entry reads in the conversation: the digits, marked as keyed (the model and the receipt
    see that it came from the keypad, which matters for 'press 1 to confirm')."""
    return f"(keypad) {entry}"
