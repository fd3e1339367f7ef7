"""Server settings: embedded defaults, overridden by FLOWYTE_* environment variables, then by CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def default_data_dir() -> Path:
    return Path(os.environ.get("FLOWYTE_DATA_DIR", ".flowyte"))


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'flowyte.db').resolve()}"


def normalize_database_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite:///) and pick the async driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def parse_sip_port(text: str) -> int | None:
    """A SIP port, or "off" for no SIP edge."""
    if text.strip().lower() in ("off", "none", "no"):
        return None
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"SIP port out of range 0-65535: {port}")
    return port


def parse_call_mode(text: str) -> str:
    if text not in ("agent", "echo"):
        raise ValueError(f'call mode must be "agent" or "echo", not {text!r}')
    return text


def parse_port_range(text: str) -> tuple[int, int]:
    """`20000-20999`: an RTP port range holding at least one even/odd pair."""
    low, sep, high = text.partition("-")
    try:
        start, end = int(low), int(high)
    except ValueError:
        raise ValueError(f"not a port range (like 20000-20999): {text!r}") from None
    if not sep or not 1024 <= start < end <= 65535:
        raise ValueError(f"port range must be LOW-HIGH within 1024-65535: {text!r}")
    return start, end


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""
    host: str = "127.0.0.1"
    http_port: int = 8080
    max_body_bytes: int = 1_048_576
    rate_limit_per_minute: int = 1200
    idempotency_in_flight_timeout_s: float = 60.0
    # The SIP/RTP edge. sip_port None: no edge (the API alone); 0: the OS picks a free port.
    sip_port: int | None = 5060
    rtp_ports: tuple[int, int] = (20000, 20999)
    media_address: str | None = None  # the address written into SDP and Contact; default the bind host
    sip_allow: str = "127.0.0.0/8,::1/128"  # trunk source allowlist: CIDRs, comma-separated, or "any"
    sip_invite_rate: float = 5.0  # INVITEs per second per source (burst twice that)
    sip_auth: str | None = None  # USER:PASSWORD: digest-authenticate inbound INVITEs (env only)
    max_calls: int = 200
    # Transfers to a phone number go to sip:<number>@<this host[:port]>; default the caller's own domain
    sip_transfer_domain: str | None = None
    call_mode: str = "agent"  # "agent": the voice agent answers; "echo": the echo test mode (telephony/echo.py)
    # In-browser voice sessions (WebRTC): STUN/TURN URLs ("turn:user:secret@host:3478"), and the addresses ICE
    # gathers host candidates on (default: every address but loopback; "127.0.0.1" for a machine-local test).
    webrtc_ice_servers: tuple[str, ...] = ()
    webrtc_host_addresses: tuple[str, ...] | None = None

    def resolved(self) -> Settings:
        url = self.database_url or sqlite_url(self.data_dir)
        return replace(self, database_url=normalize_database_url(url))

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        settings = cls(
            data_dir=default_data_dir(),
            database_url=env.get("FLOWYTE_DATABASE_URL", ""),
            host=env.get("FLOWYTE_HOST", "127.0.0.1"),
            http_port=int(env.get("FLOWYTE_HTTP_PORT", "8080")),
            max_body_bytes=int(env.get("FLOWYTE_MAX_BODY_BYTES", "1048576")),
            rate_limit_per_minute=int(env.get("FLOWYTE_RATE_LIMIT_PER_MINUTE", "1200")),
            sip_port=parse_sip_port(env.get("FLOWYTE_SIP_PORT", "5060")),
            rtp_ports=parse_port_range(env.get("FLOWYTE_RTP_PORTS", "20000-20999")),
            media_address=env.get("FLOWYTE_MEDIA_ADDRESS") or None,
            sip_allow=env.get("FLOWYTE_SIP_ALLOW", "127.0.0.0/8,::1/128"),
            sip_invite_rate=float(env.get("FLOWYTE_SIP_INVITE_RATE", "5")),
            sip_auth=env.get("FLOWYTE_SIP_AUTH") or None,
            max_calls=int(env.get("FLOWYTE_MAX_CALLS", "200")),
            sip_transfer_domain=env.get("FLOWYTE_SIP_TRANSFER_DOMAIN") or None,
            call_mode=parse_call_mode(env.get("FLOWYTE_CALL_MODE", "agent")),
            webrtc_ice_servers=_listed(env.get("FLOWYTE_WEBRTC_ICE_SERVERS", "")) or (),
            webrtc_host_addresses=_listed(env.get("FLOWYTE_WEBRTC_HOST_ADDRESSES", "")),
        )
        return settings


def _listed(value: str) -> tuple[str, ...] | None:
    """A comma-separated setting as a tuple; None when empty."""
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    return items or None
