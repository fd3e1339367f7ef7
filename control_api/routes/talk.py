"""`POST /agents/{agentId}/talk-token`: credentials for one in-browser voice session with an agent.

The hosted product mints talk tokens only for its dashboard session; here any key with `agents:write` may,
so a self-hosted dashboard (or the bundled tester page at `/talk`) can be built on the API. The answer is
`{url, token, room, expiresAt}`: the browser sends its WebRTC offer to `url` with the token, within
5 minutes, once (control_api/talk/tokens.py): `POST /talk/{room}` with `Authorization: Bearer <token>` and
`{"type": "offer", "sdp": ...}`, answered with `{"type": "answer", "sdp", "conversationId"}`; then the
session runs (control_api/talk/rooms.py). `draftMode: true` runs the draft compiled when the browser
connects and is never billed; `draftMode: false` (the default) runs the latest published version, and is
409 no_published_version for an agent never published.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import Field

from control_api.chat import sessions as sessions_repo
from control_api.clock import iso
from control_api.errors import ApiError
from control_api.http.envelope import ok
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, public, scope, services_of
from control_api.schemas.common import ApiModel
from control_api.talk import tokens
from control_api.talk.tokens import InvalidTalkToken

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Test"])


class TalkTokenRequest(ApiModel):
    draft_mode: bool = Field(
        False, description="Run the draft compiled at connect time (never billed); false runs the published version."
    )


def talk_url(request: Request, room: str) -> str:
    """Where the browser sends its offer for `room` (this server, as the client reached it)."""
    return f"{str(request.base_url).rstrip('/')}{API_PREFIX}/talk/{room}"


@router.post(
    "/agents/{agent_id}/talk-token",
    openapi_extra=scope("agents:write"),
    summary="Start an in-browser voice test",
    description="Returns the credentials a browser needs to start a real-time voice session with the agent: `url` "
    "(send the WebRTC offer there), `token` (single use), `room` and `expiresAt` (5 minutes). draftMode true "
    "tests the draft without billing; false (the default) uses the latest published version and is 409 "
    "no_published_version if the agent was never published. The hosted product allows this only from its "
    "dashboard session; here a key with agents:write may call it.",
)
async def create_talk_token(agent_id: str, request: Request, body: TalkTokenRequest | None = None) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    draft = body.draft_mode if body is not None else False
    async with services.engine.begin() as conn:
        await sessions_repo.resolve_agent(conn, principal.org_id, agent_id, draft=draft)  # 404 / 409 / compiles
        minted = await tokens.mint(conn, org_id=principal.org_id, agent_id=agent_id, draft=draft,
                                   now=services.clock.now())  # fmt: skip
    return ok(
        {"url": talk_url(request, minted.room), "token": minted.token, "room": minted.room,
         "expiresAt": iso(minted.expires_at)}
    )  # fmt: skip


class Offer(ApiModel):
    type: Literal["offer"] = Field(description='Always "offer".')
    sdp: str = Field(min_length=1, max_length=100_000, description="The browser's SDP offer (audio, data channel).")


class NoVoice(ApiError):
    status = 503
    code = "voice_unavailable"
    title = "Service unavailable"


@router.post(
    "/talk/{room}",
    openapi_extra=public(),
    summary="Join an in-browser voice session (WebRTC offer)",
    description="Redeems a talk token (single use, 5 minutes; `Authorization: Bearer <token>`) for its room and "
    "answers the browser's WebRTC offer. No API key: the talk token is the credential. 401 for a token that is "
    "unknown or for another room, 409 once used, 410 once expired; 402 when a published session cannot be "
    "paid for; 503 when this server runs no voice stack.",
)
async def join_talk_room(body: Offer, request: Request, room: str = Path(max_length=40)) -> dict[str, Any]:
    services = services_of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.startswith(tokens.TOKEN_PREFIX):
        raise InvalidTalkToken("send the talk token as `Authorization: Bearer tt_...`")
    if services.talk is None:
        raise NoVoice("this server runs no voice stack; start it with the voice agent to talk in a browser")
    connected = await services.talk.connect(room, token.strip(), body.sdp)
    return ok({"type": "answer", "sdp": connected.answer_sdp, "conversationId": connected.conversation_id})
