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


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""
    host: str = "127.0.0.1"
    http_port: int = 8080
    max_body_bytes: int = 1_048_576
    rate_limit_per_minute: int = 1200
    idempotency_in_flight_timeout_s: float = 60.0

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
        )
        return settings
