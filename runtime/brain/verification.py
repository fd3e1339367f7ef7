"""Caller verification within one conversation: one small state machine per method, as a table.

Each configured method (dob_postcode, account_pin, ...) that has a verifier skill is tracked on its own.
An attempt is the caller's answers sent to the verifier; its result is the input:

    state        input          effect                              next state
    UNVERIFIED   SUCCESS        GRANT    token stamped now          VERIFIED
    UNVERIFIED   FAILURE        COUNT    one failure more           UNVERIFIED
    UNVERIFIED   LAST_FAILURE   LOCK     failures reach maxAttempts LOCKED
    VERIFIED     SUCCESS        GRANT    token refreshed            VERIFIED
    VERIFIED     FAILURE        REVOKE   a failed re-check drops it UNVERIFIED
    VERIFIED     LAST_FAILURE   LOCK                                LOCKED
    LOCKED       (any)          REFUSE   the verifier is not called LOCKED

A success resets the failure count. Expiry is not an input but a reading: a VERIFIED method whose token
is older than its `tokenTtlSeconds` at `now` reads as UNVERIFIED (its failures still count). LOCKED lasts
for the rest of the conversation.

Step-up ("a fresh check for this action"): every success gets a sequence number. When a step-up action
is refused, the conversation remembers the sequence number at that moment; the action may then run once
a method verified *after* it (a higher number) is still within its TTL, and running it consumes the
request, so the next step-up action needs yet another check. Sequence numbers, not timestamps, order
these, so a frozen test clock cannot make a stale check look fresh.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from runtime.agent_config import VerificationMethod


class VState(enum.Enum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    LOCKED = "locked"


class VInput(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    LAST_FAILURE = "last_failure"


class VEffect(enum.Enum):
    GRANT = "grant"
    COUNT = "count"
    REVOKE = "revoke"
    LOCK = "lock"
    REFUSE = "refuse"


TRANSITIONS: dict[tuple[VState, VInput], tuple[VEffect, VState]] = {
    (VState.UNVERIFIED, VInput.SUCCESS): (VEffect.GRANT, VState.VERIFIED),
    (VState.UNVERIFIED, VInput.FAILURE): (VEffect.COUNT, VState.UNVERIFIED),
    (VState.UNVERIFIED, VInput.LAST_FAILURE): (VEffect.LOCK, VState.LOCKED),
    (VState.VERIFIED, VInput.SUCCESS): (VEffect.GRANT, VState.VERIFIED),
    (VState.VERIFIED, VInput.FAILURE): (VEffect.REVOKE, VState.UNVERIFIED),
    (VState.VERIFIED, VInput.LAST_FAILURE): (VEffect.LOCK, VState.LOCKED),
    (VState.LOCKED, VInput.SUCCESS): (VEffect.REFUSE, VState.LOCKED),
    (VState.LOCKED, VInput.FAILURE): (VEffect.REFUSE, VState.LOCKED),
    (VState.LOCKED, VInput.LAST_FAILURE): (VEffect.REFUSE, VState.LOCKED),
}

Outcome = Literal["verified", "failed", "locked"]


@dataclass
class _MethodState:
    state: VState = VState.UNVERIFIED
    failures: int = 0
    verified_at: datetime | None = None
    verified_seq: int = 0


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    effect: VEffect
    attempt: int  # which failed-or-successful attempt this was (1-based), counting since the last success
    attempts_left: int


class Verification:
    def __init__(self, methods: Sequence[VerificationMethod]) -> None:
        self.methods = {m.method: m for m in methods}
        self._states = {m.method: _MethodState() for m in methods}
        self._seq = 0
        self._step_up: dict[str, int] = {}  # action key -> sequence number when the fresh check was asked

    @property
    def usable(self) -> bool:
        return bool(self.methods)

    def state(self, method: str, now: datetime) -> VState:
        s = self._states[method]
        if s.state is VState.VERIFIED and not self._fresh(method, now):
            return VState.UNVERIFIED
        return s.state

    def _fresh(self, method: str, now: datetime) -> bool:
        s = self._states[method]
        ttl = timedelta(seconds=self.methods[method].token_ttl_seconds)
        return s.state is VState.VERIFIED and s.verified_at is not None and now - s.verified_at <= ttl

    def is_verified(self, now: datetime) -> bool:
        return any(self._fresh(name, now) for name in self.methods)

    def expired(self, now: datetime) -> bool:
        """Some method was verified, and none is fresh any more."""
        granted = any(s.state is VState.VERIFIED for s in self._states.values())
        return granted and not self.is_verified(now)

    def all_locked(self) -> bool:
        return bool(self._states) and all(s.state is VState.LOCKED for s in self._states.values())

    def is_locked(self, method: str) -> bool:
        return self._states[method].state is VState.LOCKED

    def attempts_left(self, method: str) -> int:
        s = self._states[method]
        return 0 if s.state is VState.LOCKED else max(0, self.methods[method].max_attempts - s.failures)

    def record(self, method: str, success: bool, now: datetime) -> AttemptResult:
        """Apply one attempt's result (a refused attempt on a locked method is recorded as such)."""
        s = self._states[method]
        current = self.state(method, now)
        if success:
            kind = VInput.SUCCESS
        elif s.failures + 1 >= self.methods[method].max_attempts:
            kind = VInput.LAST_FAILURE
        else:
            kind = VInput.FAILURE
        effect, s.state = TRANSITIONS[(current, kind)]
        attempt = s.failures + 1
        if effect is VEffect.GRANT:
            self._seq += 1
            s.failures, s.verified_at, s.verified_seq = 0, now, self._seq
        elif effect in (VEffect.COUNT, VEffect.REVOKE, VEffect.LOCK):
            s.failures += 1
            s.verified_at = None
        outcome: Outcome = "verified" if effect is VEffect.GRANT else "locked" if s.state is VState.LOCKED else "failed"
        return AttemptResult(outcome, effect, attempt, self.attempts_left(method))

    # --- step-up ---

    def request_step_up(self, key: str) -> None:
        self._step_up.setdefault(key, self._seq)

    def step_up_satisfied(self, key: str, now: datetime) -> bool:
        asked = self._step_up.get(key)
        if asked is None:
            return False
        return any(self._fresh(name, now) and self._states[name].verified_seq > asked for name in self.methods)

    def consume_step_up(self, key: str) -> None:
        self._step_up.pop(key, None)

    # --- persistence: what a channel that rebuilds the brain every turn stores between turns ---

    def to_state(self) -> dict[str, Any]:
        return {
            "seq": self._seq,
            "stepUp": dict(self._step_up),
            "methods": {
                name: {"state": s.state.value, "failures": s.failures, "verifiedSeq": s.verified_seq,
                       "verifiedAt": None if s.verified_at is None else s.verified_at.isoformat()}
                for name, s in self._states.items()
            },
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore `to_state()`; methods the agent no longer has are ignored, new ones start afresh."""
        self._seq = int(state.get("seq", 0))
        self._step_up = {str(k): int(v) for k, v in (state.get("stepUp") or {}).items()}
        for name, saved in (state.get("methods") or {}).items():
            if name not in self._states:
                continue
            at = saved.get("verifiedAt")
            self._states[name] = _MethodState(
                VState(saved.get("state", VState.UNVERIFIED.value)), int(saved.get("failures", 0)),
                None if at is None else datetime.fromisoformat(at), int(saved.get("verifiedSeq", 0)),
            )

    def snapshot(self, now: datetime) -> dict[str, Any]:
        methods: dict[str, Any] = {}
        for name, s in self._states.items():
            ttl = timedelta(seconds=self.methods[name].token_ttl_seconds)
            fresh = self._fresh(name, now)
            methods[name] = {
                "state": self.state(name, now).value,
                "failures": s.failures,
                "attemptsLeft": self.attempts_left(name),
                "verifiedAt": s.verified_at.isoformat() if s.verified_at and fresh else None,
                "expiresAt": (s.verified_at + ttl).isoformat() if s.verified_at and fresh else None,
            }
        return {"verified": self.is_verified(now), "locked": self.all_locked(), "methods": methods,
                "pendingStepUp": sorted(self._step_up)}
