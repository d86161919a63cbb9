"""PostgreSQL connection URLs: normalise, parse, build. No psycopg import, so Pulumi components can use it.

Sockets: the Cloud SQL form `postgresql://user:pw@/db?host=/cloudsql/project:region:instance` carries no `sslmode`,
because libpq ignores sslmode on Unix-domain sockets (the Cloud SQL connector already encrypts the hop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from dbops.errors import DbopsError

SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PORT = 5432


def normalize_url(url: str) -> str:
    """`postgres://` and `postgresql+psycopg://` -> `postgresql://` (what libpq accepts); other schemes are refused."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        shown = f"{scheme}://" if sep else "no scheme"
        raise DbopsError(
            f"the database URL must start with postgresql://, postgres:// or postgresql+psycopg://, not {shown}"
        )
    return f"postgresql://{rest}"


@dataclass(frozen=True)
class DatabaseUrl:
    """The parts of a PostgreSQL URL the release needs; `password` is kept out of repr."""

    user: str
    password: str = field(repr=False)
    host: str | None  # None when connecting over a Unix socket (`socket_dir`)
    port: int
    database: str
    sslmode: str | None
    socket_dir: str | None = None

    @property
    def location(self) -> str:
        """Where the server is, for messages: `host:port`, or the socket directory."""
        if self.socket_dir is not None:
            return f"socket {self.socket_dir}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(url: str) -> DatabaseUrl:
    """Parse a PostgreSQL URL; raises DbopsError (never echoing the URL, which may hold a password)."""
    parts = urlsplit(normalize_url(url))
    query = dict(parse_qsl(parts.query))
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise DbopsError("the database URL has an invalid port; use host:port with a port from 1 to 65535") from None
    database = unquote(parts.path.lstrip("/"))
    user = unquote(parts.username or "")
    if not database:
        raise DbopsError("the database URL names no database; add /<database> after the host")
    if not user:
        raise DbopsError("the database URL names no user; use postgresql://user:password@host:port/database")
    sslmode = query.get("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        raise DbopsError(f"the database URL has sslmode={sslmode!r}; allowed: {', '.join(SSLMODES)}")
    query_host = query.get("host")
    socket_dir = query_host if query_host and query_host.startswith("/") else None
    host = None if socket_dir else (query_host or parts.hostname)
    if socket_dir is None and not host:
        raise DbopsError("the database URL names no host; use postgresql://user:password@host:port/database")
    return DatabaseUrl(
        user=user,
        password=unquote(parts.password or ""),
        host=host,
        port=port,
        database=database,
        sslmode=sslmode,
        socket_dir=socket_dir,
    )


def build_url(
    *,
    user: str,
    password: str,
    host: str,
    port: int,
    database: str,
    sslmode: str,
    socket_dir: str | None = None,
) -> str:
    """`postgresql://user:pw@host:port/db?sslmode=…`, or with `socket_dir` the Cloud SQL socket form (no sslmode)."""
    if sslmode not in SSLMODES:
        raise ValueError(f"sslmode {sslmode!r} is not one of {', '.join(SSLMODES)}")
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    path = quote(database, safe="")
    if socket_dir is not None:
        return f"postgresql://{credentials}@/{path}?host={quote(socket_dir, safe='/:')}"
    netloc_host = f"[{host}]" if ":" in host else host
    return f"postgresql://{credentials}@{netloc_host}:{port}/{path}?sslmode={sslmode}"


def with_credentials(url: str, *, user: str, password: str) -> str:
    """The same server, database and query (sslmode, socket host…) as `url`, logged in as another user."""
    parts = urlsplit(normalize_url(url))
    hostport = parts.netloc.rpartition("@")[2]
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    query = urlencode(parse_qsl(parts.query), safe="/:")
    return f"postgresql://{credentials}@{hostport}{parts.path}" + (f"?{query}" if query else "")
