"""Names shared by the Pulumi program and the release engine; no imports, so any code can read them cheaply."""

from __future__ import annotations

ENVIRONMENTS = ("dev", "staging", "prod")
PROVIDERS = ("fly", "aws", "gcp", "local")

# How long a release waits for the database to accept connections: a new cloud instance can take minutes between
# "created" and reachable (first boot, DNS), so five minutes, not seconds.
RELEASE_WAIT_SECONDS = 300.0

# The services that get their own login role, in the order outputs list them.
SERVICES = ("analytics", "chat", "assets", "auth")

# NOLOGIN role that owns every schema object, so default privileges (set FOR this role) cover future tables.
OWNER_ROLE = "gaia_owner"


def role_name(service: str) -> str:
    """The PostgreSQL login role of a service (`chat` -> `gaia_chat`)."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; allowed: {', '.join(SERVICES)}")
    return f"gaia_{service}"


SERVICE_ROLES: dict[str, str] = {service: role_name(service) for service in SERVICES}


def cloud_name(provider: str, environment: str) -> str:
    """The database's name on its cloud, as the seed names it: Fly app `gaia-db-<env>`, RDS / Cloud SQL `gaia-<env>`."""
    return f"gaia-db-{environment}" if provider == "fly" else f"gaia-{environment}"
