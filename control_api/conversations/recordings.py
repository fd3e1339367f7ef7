"""Call recordings on disk, and the short-lived signed URLs that serve them.

Where: `<data_dir>/recordings/<org_id>/<conversation_id>.wav` (stereo, left the caller, right the agent; see
`telephony.recording`). The conversation row keeps the path relative to the data directory, set once the
call has ended and the file is complete.

The URL is `/api/v1/recordings/<token>` and needs no API key: the token is the credential, so it can be
handed to a browser's audio element or a download tool. It names one recording and expires
`URL_TTL_SECONDS` after it was issued::

    token   = base64url(payload) "." base64url(HMAC-SHA256(key, base64url(payload)))
    payload = "v1:<org_id>:<conversation_id>:<expiry, Unix seconds>"

The key is derived from `<data_dir>/recording.key`: 32 random bytes made on first use, mode 0600, written to
a temporary file and linked into place, so two processes starting at once agree on one key and nobody reads
half of one. Deleting the file voids every URL issued so far. Only issuing a URL creates it: an anonymous
request for a recording never writes anything (with no key, no URL was ever issued, so every token is bad).

Verification judges the signature first (malformed or wrong → `InvalidToken`, 403) and only then the
expiry (`ExpiredToken`, 410), so a forged token learns nothing. The organization inside the signed payload
scopes the lookup, as every other query is scoped.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from control_api.errors import ApiError, Forbidden, NotFound

URL_TTL_SECONDS = 300
KEY_FILE = "recording.key"
RECORDINGS_DIR = "recordings"
_VERSION = "v1"
_PURPOSE = b"flowyte recording url v1"


class InvalidToken(Forbidden):
    code = "invalid_signature"


class ExpiredToken(ApiError):
    status = 410
    code = "link_expired"
    title = "Gone"


@dataclass(frozen=True)
class SignedLink:
    token: str
    expires_at: datetime  # naive UTC, as the clock gives it


def relative_path(org_id: str, conversation_id: str) -> str:
    """Where a conversation's recording goes, relative to the data directory."""
    return f"{RECORDINGS_DIR}/{org_id}/{conversation_id}.wav"


def stored_file(data_dir: Path, relative: str | None, conversation_id: str) -> Path:
    """The recording on disk, or NotFound when the conversation has none (or it has been deleted)."""
    if relative is None:
        raise NotFound(
            f"conversation {conversation_id} has no recording: only voice calls answered by an agent with "
            "recordCalls on are recorded, and a recording is available once its call has ended"
        )
    root = (data_dir / RECORDINGS_DIR).resolve()
    path = (data_dir / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"the recording of conversation {conversation_id} is no longer stored")
    return path


def existing_key(data_dir: Path) -> bytes | None:
    """The URL-signing key if one was ever made, for checking a URL."""
    return load_key(data_dir) if (data_dir / KEY_FILE).exists() else None


def load_key(data_dir: Path) -> bytes:
    """The URL-signing key, derived from `<data_dir>/recording.key` (created on first use, mode 0600)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        temporary = data_dir / f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(32))
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race: use its key
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    secret = path.read_bytes()
    if len(secret) < 32:
        raise RuntimeError(f"{path} is damaged (fewer than 32 bytes); delete it to make a new one")
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, encoded_payload: str) -> str:
    return _b64(hmac.new(key, encoded_payload.encode(), hashlib.sha256).digest())


def _unix(at: datetime) -> int:
    return int(at.replace(tzinfo=UTC).timestamp()) if at.tzinfo is None else int(at.timestamp())


def sign(key: bytes, org_id: str, conversation_id: str, *, now: datetime, ttl_s: int = URL_TTL_SECONDS) -> SignedLink:
    expires = _unix(now) + ttl_s
    encoded = _b64(f"{_VERSION}:{org_id}:{conversation_id}:{expires}".encode())
    token = f"{encoded}.{_signature(key, encoded)}"
    return SignedLink(token, datetime.fromtimestamp(expires, UTC).replace(tzinfo=None))


def verify(key: bytes | None, token: str, *, now: datetime) -> tuple[str, str]:
    """(org_id, conversation_id) of a genuine, unexpired token; InvalidToken or ExpiredToken otherwise."""
    invalid = InvalidToken("the recording link is not valid: its signature does not match")
    encoded, dot, signature = token.partition(".")
    if key is None or not dot or not hmac.compare_digest(signature.encode(), _signature(key, encoded).encode()):
        raise invalid
    try:
        version, org_id, conversation_id, expires = _unb64(encoded).decode().split(":")
        expiry = int(expires)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid from None
    if version != _VERSION:
        raise invalid
    if _unix(now) >= expiry:
        raise ExpiredToken(
            "the recording link has expired; ask GET /api/v1/conversations/{id}/audio for a new one"
        )
    return org_id, conversation_id
