"""Persistence: SQLAlchemy Core tables, the async engine, and versioned Alembic migrations."""
