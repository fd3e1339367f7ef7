"""The SIP/RTP edge inside `flowyte serve`: its configuration from the server settings, and its lifetime.
Which calls it takes and who answers them is control_api/calls/admission.py."""

from __future__ import annotations

import asyncio
import logging
import os

from control_api.settings import Settings
from telephony.edge import EdgeConfig, SipEdge
from telephony.sip.admission import InviteRateLimiter, parse_allowlist
from telephony.sip.digest import DigestAuthenticator, DigestCredentials

log = logging.getLogger(__name__)

DIGEST_REALM = "flowyte"


def edge_config(settings: Settings) -> EdgeConfig:
    """EdgeConfig from the server settings (ValueError names a bad allowlist entry or auth setting)."""
    auth = None
    if settings.sip_auth:
        username, sep, password = settings.sip_auth.partition(":")
        if not sep or not username or not password:
            raise ValueError("FLOWYTE_SIP_AUTH must be USER:PASSWORD")
        credentials = DigestCredentials(username, password, DIGEST_REALM)
        # MD5 first: much deployed SIP equipment (SIPp included) reads only the first challenge and knows only
        # MD5 (tests/test_sip_edge_peers.py); RFC 8760 clients still find SHA-256 in the second.
        auth = DigestAuthenticator(DIGEST_REALM, credentials, os.urandom(32), algorithms=("MD5", "SHA-256"))
    assert settings.sip_port is not None
    return EdgeConfig(
        bind_host=settings.host,
        sip_port=settings.sip_port,
        media_address=settings.media_address,
        rtp_ports=settings.rtp_ports,
        allowlist=parse_allowlist(settings.sip_allow),
        rate_limit=InviteRateLimiter(settings.sip_invite_rate, burst=max(1, int(settings.sip_invite_rate * 2))),
        auth=auth,
        max_calls=settings.max_calls,
        transfer_domain=settings.sip_transfer_domain,
    )


async def serve_sip(edge: SipEdge, stop: asyncio.Event) -> None:
    """Run the edge until `stop` is set, then hang up every call and close."""
    try:
        await stop.wait()
    finally:
        await edge.close()
