"""Database operations for gaia-db: URLs, the release (migrations, roles, admin seed), health, metrics, backup and
restore, diff-schema, and the `python -m dbops` CLI that runs them.

Deliberately empty of imports: Pulumi components import `dbops.urls` / `dbops.names` without pulling in psycopg,
SQLAlchemy or Alembic.
"""
