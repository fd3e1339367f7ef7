"""Migrations are versioned, idempotent, and produce exactly the schema `tables.py` declares."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from control_api.db.engine import alembic_config, create_engine, current_revision, migrate
from control_api.db.tables import metadata


async def test_migrated_schema_matches_the_declared_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine)  # a second run on an up-to-date database is a no-op
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert await current_revision(engine) == head

        def compare(conn: sa.Connection) -> list[object]:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            return list(compare_metadata(context, metadata))

        async with engine.connect() as conn:
            differences = await conn.run_sync(compare)
        assert differences == []
    finally:
        await engine.dispose()


async def test_fresh_sqlite_file_is_created_and_migrated(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "nested" / "dir" / "flowyte.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate(engine)
        assert path.exists()
        assert await current_revision(engine) is not None
    finally:
        await engine.dispose()
