"""Secret keys: minted once, shown once, stored only as a SHA-256 hash.

A key is `flowyte_sk_` + 40 random base62 characters (~238 bits), so a plain SHA-256 is enough: there is
nothing to brute-force that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.clock import Clock
from control_api.db.tables import api_keys, organizations
from control_api.ids import new_id

SECRET_PREFIX = "flowyte_sk_"
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: one key of one organization."""

    org_id: str
    key_id: str
    label: str
    scopes: frozenset[str]

    actor_type = "api_key"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    org_id: str
    org_name: str
    label: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


def mint_secret() -> str:
    return SECRET_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def ensure_organization(conn: AsyncConnection, name: str, clock: Clock) -> str:
    row = (await conn.execute(sa.select(organizations.c.id).where(organizations.c.name == name))).first()
    if row is not None:
        return str(row.id)
    org_id = new_id("org")
    await conn.execute(organizations.insert().values(id=org_id, name=name, created_at=clock.now()))
    return org_id


async def create_key(
    conn: AsyncConnection, *, org_name: str, scopes: tuple[str, ...], label: str, clock: Clock
) -> tuple[KeyRecord, str]:
    """Create the organization if new and a key for it; returns the record and the secret (shown once)."""
    org_id = await ensure_organization(conn, org_name, clock)
    secret = mint_secret()
    key_id = new_id("key")
    now = clock.now()
    await conn.execute(
        api_keys.insert().values(
            id=key_id,
            org_id=org_id,
            label=label,
            prefix=secret[: len(SECRET_PREFIX) + 6],
            secret_hash=hash_secret(secret),
            scopes=" ".join(scopes),
            created_at=now,
        )
    )
    record = KeyRecord(key_id, org_id, org_name, label, secret[: len(SECRET_PREFIX) + 6], scopes, now, None)
    return record, secret


async def list_keys(conn: AsyncConnection) -> list[KeyRecord]:
    query = (
        sa.select(api_keys, organizations.c.name.label("org_name"))
        .join(organizations, organizations.c.id == api_keys.c.org_id)
        .order_by(api_keys.c.created_at, api_keys.c.id)
    )
    return [
        KeyRecord(
            r.id, r.org_id, r.org_name, r.label, r.prefix, tuple(r.scopes.split()), r.created_at, r.revoked_at
        )
        for r in (await conn.execute(query)).all()
    ]


async def revoke_key(conn: AsyncConnection, key_id: str, clock: Clock) -> bool:
    """Revoke a key; False when no such key exists. Revoking twice is harmless."""
    exists = (await conn.execute(sa.select(api_keys.c.id).where(api_keys.c.id == key_id))).first()
    if exists is None:
        return False
    await conn.execute(
        api_keys.update()
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=clock.now())
    )
    return True


async def authenticate(conn: AsyncConnection, secret: str) -> Principal | None:
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 200:
        return None
    row = (
        await conn.execute(
            sa.select(api_keys.c.id, api_keys.c.org_id, api_keys.c.label, api_keys.c.scopes).where(
                api_keys.c.secret_hash == hash_secret(secret), api_keys.c.revoked_at.is_(None)
            )
        )
    ).first()
    if row is None:
        return None
    return Principal(row.org_id, row.id, row.label, frozenset(row.scopes.split()))
