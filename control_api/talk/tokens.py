"""Talk tokens: the credential a browser uses to join one in-browser voice session ("room").

`POST /agents/{agentId}/talk-token` mints one for an agent and a mode (draft or published). It is

- short-lived: it must be redeemed within `TTL_SECONDS` (5 minutes) of being minted;
- single-use: the first connect that presents it redeems it, atomically (one UPDATE that only succeeds
  while the token is unredeemed and unexpired), so a replayed or shared token opens nothing;
- bound to its organization, agent and mode, and to its room: the room in the connect URL must be the one
  the token was minted for.

Only the SHA-256 of the secret is stored, so the table never holds a usable credential. Failures say which
rule was broken: unknown token or another room's token (401 invalid_talk_token), already used (409
talk_token_used), expired (410 talk_token_expired).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import talk_tokens
from control_api.errors import ApiError, Conflict, Unauthorized
from control_api.ids import new_id

TTL_SECONDS = 300
TOKEN_PREFIX = "tt_"


class InvalidTalkToken(Unauthorized):
    code = "invalid_talk_token"


class TalkTokenUsed(Conflict):
    code = "talk_token_used"


class TalkTokenExpired(ApiError):
    status = 410
    code = "talk_token_expired"
    title = "Gone"


@dataclass(frozen=True)
class TalkGrant:
    """What a redeemed token allows: one session with this agent, in this mode."""

    room: str
    org_id: str
    agent_id: str
    draft: bool


@dataclass(frozen=True)
class MintedToken:
    room: str
    token: str  # the secret, shown once
    expires_at: datetime  # naive UTC, as the clock gives it


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def mint(conn: AsyncConnection, *, org_id: str, agent_id: str, draft: bool, now: datetime) -> MintedToken:
    room, token = new_id("room"), TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=TTL_SECONDS)
    await conn.execute(
        talk_tokens.insert().values(
            room=room, org_id=org_id, agent_id=agent_id, draft=draft, token_hash=_digest(token),
            expires_at=expires_at, redeemed_at=None, created_at=now,
        )
    )  # fmt: skip
    return MintedToken(room, token, expires_at)


async def redeem(conn: AsyncConnection, *, room: str, token: str, now: datetime) -> TalkGrant:
    """Use the token for `room`, once; raises the error that says why not."""
    digest = _digest(token)
    taken = await conn.execute(
        talk_tokens.update()
        .where(
            talk_tokens.c.room == room,
            talk_tokens.c.token_hash == digest,
            talk_tokens.c.redeemed_at.is_(None),
            talk_tokens.c.expires_at > now,
        )
        .values(redeemed_at=now)
    )
    row = (await conn.execute(sa.select(talk_tokens).where(talk_tokens.c.token_hash == digest))).first()
    if taken.rowcount == 1 and row is not None:
        return TalkGrant(row.room, row.org_id, row.agent_id, row.draft)
    if row is None or row.room != room:
        raise InvalidTalkToken("this talk token is not valid for this room; mint a new one for the agent")
    if row.redeemed_at is not None:
        raise TalkTokenUsed("this talk token has already been used; each one opens a single session")
    raise TalkTokenExpired(f"this talk token expired at {row.expires_at.isoformat()}Z; mint a new one")
