"""Durable side: SQLAlchemy schema, Alembic migrations, journal flush, hydration, reports."""
