"""Database operations for gaia-db: URLs, release (migrations, roles, admin seed) and the `python -m dbops` CLI.

Deliberately empty of imports: Pulumi components import `dbops.urls` / `dbops.names` without pulling in psycopg,
SQLAlchemy or Alembic.
"""
