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

# Every admin API key starts with this, on both paths (the CLI's generated key and the Pulumi program's), so a leaked
# key is recognisable to secret scanners.
ADMIN_KEY_PREFIX = "gaia_"


# The read-only login for the read replicas (analytics, operations): `readerUrls` log in as it, never as the admin.
READER = "reader"
# Every login the release manages, each with a password the program (or GAIA_DB_ROLE_PASSWORDS) supplies: the
# services, then the reader. One mechanism for all of them.
LOGINS = (*SERVICES, READER)


def role_name(login: str) -> str:
    """The PostgreSQL login role of a service or the reader (`chat` -> `gaia_chat`, `reader` -> `gaia_reader`)."""
    if login not in LOGINS:
        raise ValueError(f"unknown login {login!r}; allowed: {', '.join(LOGINS)}")
    return f"gaia_{login}"


SERVICE_ROLES: dict[str, str] = {service: role_name(service) for service in SERVICES}
LOGIN_ROLES: dict[str, str] = {login: role_name(login) for login in LOGINS}

# Each service's second login (`gaia_chat_alt`), a member of the service role with no rights of its own: its rights
# are the service role's through that membership. `credentialsVersion` alternates which of the two logins gets a new
# password and appears in the URLs (AWS Secrets Manager's alternating-users rotation), so the other keeps working.
SECOND_LOGIN_SUFFIX = "_alt"
SECOND_LOGINS: dict[str, str] = {service: f"{service}{SECOND_LOGIN_SUFFIX}" for service in SERVICES}
SECOND_LOGIN_ROLES: dict[str, str] = {
    SECOND_LOGINS[service]: role_name(service) + SECOND_LOGIN_SUFFIX for service in SERVICES
}
# Every login with a password, by its key in GAIA_DB_ROLE_PASSWORDS / the release's inputs: the services, the reader,
# then the services' second logins.
PASSWORD_LOGINS = (*LOGINS, *SECOND_LOGINS.values())
PASSWORD_LOGIN_ROLES: dict[str, str] = {**LOGIN_ROLES, **SECOND_LOGIN_ROLES}


def active_login(service: str, credentials_version: int) -> str:
    """The login `credentialsVersion` puts in a service's URLs: its own role on odd versions (1, the default, so a
    stack from before the second logins keeps its URLs), its second login on even ones."""
    return service if credentials_version % 2 else SECOND_LOGINS[service]


def cloud_name(provider: str, environment: str) -> str:
    """The database's name on its cloud, as the seed names it: Fly app `gaia-db-<env>`, RDS / Cloud SQL `gaia-<env>`."""
    return f"gaia-db-{environment}" if provider == "fly" else f"gaia-{environment}"


# What a stack has unless its config says otherwise (components/settings.py's tiers and defaults read these).
TIER_READ_REPLICAS = {"dev": 0, "staging": 0, "prod": 2}


def default_database_name(provider: str, environment: str) -> str:
    """The seed's database: `postgres` on Fly, `llm_platform` on RDS / Cloud SQL, `gaia_<env>` locally."""
    return {"fly": "postgres", "aws": "llm_platform", "gcp": "llm_platform"}.get(provider, f"gaia_{environment}")


def admin_user(environment: str) -> str:
    """The admin (RDS master / Cloud SQL) login the seed names `gaia_<env>`."""
    return f"gaia_{environment}"


def replica_name(base: str, index: int) -> str:
    """A read replica's name beside its primary's (`gaia-prod` -> `gaia-prod-replica-1`): the cloud name of the
    replica of a cloud instance, and the resource name of the replica of a resource."""
    return f"{base}-replica-{index}"


# --- the Pulumi program's names, kept here so `python -m dbops import-plan` reproduces them without Pulumi ---

PROJECT = "gaia-db"
DATABASE_COMPONENT = "gaia:index:PortableDatabase"
# The provider components whose cloud resources `pulumi import` can adopt.
CLUSTER_COMPONENTS = {"aws": "gaia:aws:PostgresCluster", "gcp": "gaia:gcp:PostgresCluster"}


def resource_prefix(provider: str, environment: str, stack: str) -> str:
    """The program's name for the environment's components, `gaia-db-<env>` as in the seed; a local stack is named
    after the stack so several can coexist."""
    return f"gaia-db-{stack if provider == 'local' else environment}"


def child_name(prefix: str, part: str) -> str:
    """A provider component's resource name: `gaia-db-prod` + `primary` -> `gaia-db-prod-primary`."""
    return f"{prefix}-{part}"


# issue 19: the local stack's PgBouncer logs in as this role to look up a service login's SCRAM verifier, through the
# one SECURITY DEFINER function in this schema (components/scripts/local/pooler.sh); neither is a managed role or
# part of the application's schema.
POOLER_ROLE = "gaia_pooler"
POOLER_SCHEMA = "gaia_pooler"
