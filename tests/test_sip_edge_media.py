"""The edge's answers to media changes mid-call, driven over a real UDP socket by a scripted phone:
hold (sendonly -> we answer recvonly and stop sending), resume, and a re-INVITE that moves the media."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import pytest

from telephony.call import SipCallLeg
from telephony.edge import Admit, EdgeConfig, Refuse, SipEdge
from telephony.sdp import SessionDescription
from telephony.sip.message import SipResponse, parse
from telephony.sip.ua_types import CallInfo, Peer
from tests.test_sip_ua_support import OFFER, Phone

HOST = "127.0.0.1"


class UdpPhone:
    def __init__(self, edge_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.edge = (HOST, edge_port)
        self.phone = Phone(peer=Peer("UDP", HOST, self.sock.getsockname()[1]))

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, self.edge)

    async def final(self, method: str) -> SipResponse:
        """The next final response to `method`, skipping 1xx and 2xx retransmissions of other requests."""
        async with asyncio.timeout(5):
            while True:
                message = parse(await asyncio.get_running_loop().sock_recv(self.sock, 65536))
                if (
                    isinstance(message, SipResponse)
                    and message.status >= 200
                    and message.cseq == (self.phone.cseq, method)
                ):
                    return message


@pytest.fixture
async def edge() -> AsyncIterator[tuple[SipEdge, list[SipCallLeg]]]:
    legs: list[SipCallLeg] = []

    async def hold_the_line(leg: SipCallLeg) -> None:
        legs.append(leg)
        await leg.wait_ended()

    async def router(info: CallInfo) -> Admit | Refuse:
        return Admit(hold_the_line, ring=False)

    base = random.Random().randrange(30000, 50000, 2)
    async with SipEdge(EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 20)), router) as running:
        yield running, legs


def direction(sdp: bytes) -> str:
    media = SessionDescription.parse(sdp).media[0]
    return next(a.name for a in media.attributes if a.name in ("sendrecv", "sendonly", "recvonly", "inactive"))


async def test_hold_resume_and_moved_media(edge: tuple[SipEdge, list[SipCallLeg]]) -> None:
    sip, legs = edge
    caller = UdpPhone(sip.port)
    phone = caller.phone
    await caller.send(phone.invite())
    ok = await caller.final("INVITE")
    assert ok.status == 200 and direction(ok.body) == "sendrecv"
    phone.to_tag = ok.to_tag
    await caller.send(phone.request("ACK"))
    (leg,) = legs
    await leg.wait_confirmed()
    assert leg.endpoint.sending and leg.endpoint.receiver.remote == (HOST, 40000)

    hold = OFFER.replace(b"a=sendrecv", b"a=sendonly").replace(b"o=caller 1 1", b"o=caller 1 2")
    await caller.send(phone.next("INVITE", body=hold, content_type="application/sdp"))
    held = await caller.final("INVITE")
    assert held.status == 200 and direction(held.body) == "recvonly"
    await caller.send(phone.request("ACK"))
    assert not leg.endpoint.sending and leg.held, "on hold we send nothing"

    moved = OFFER.replace(b"m=audio 40000", b"m=audio 40100").replace(b"o=caller 1 1", b"o=caller 1 3")
    await caller.send(phone.next("INVITE", body=moved, content_type="application/sdp"))
    resumed = await caller.final("INVITE")
    assert resumed.status == 200 and direction(resumed.body) == "sendrecv"
    versions = [SessionDescription.parse(m.body).origin.session_version for m in (ok, held, resumed)]
    assert versions == sorted(versions) and len(set(versions)) == 3, "each new answer bumps the o= version"
    await caller.send(phone.request("ACK"))
    assert leg.endpoint.sending and leg.endpoint.receiver.remote == (HOST, 40100), "media follows the move"

    await caller.send(phone.next("UPDATE", body=b"v=0\r\nnot sdp", content_type="application/sdp"))
    assert (await caller.final("UPDATE")).status in (400, 488)
    assert not leg.ended, "a bad offer is refused and the call goes on"

    await caller.send(phone.next("BYE"))
    assert (await caller.final("BYE")).status == 200
    assert await leg.wait_ended() == "remote hangup"
    caller.sock.close()


async def test_an_offer_with_no_codec_in_common_is_refused_488_and_the_port_is_returned(
    edge: tuple[SipEdge, list[SipCallLeg]],
) -> None:
    sip, legs = edge
    caller = UdpPhone(sip.port)
    g729_only = OFFER.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 18").replace(b"a=rtpmap:0 PCMU/8000\r\n", b"")
    g729_only = g729_only.replace(b"a=rtpmap:8 PCMA/8000\r\n", b"a=rtpmap:18 G729/8000\r\n")
    await caller.send(caller.phone.request("INVITE", body=g729_only, content_type="application/sdp"))
    refused = await caller.final("INVITE")
    assert refused.status == 488 and not legs
    async with asyncio.timeout(5):
        await sip.wait_idle()
    assert sip.pool.in_use == 0, "the RTP port opened for the call went back to the pool"
    caller.sock.close()
