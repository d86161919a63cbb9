"""PostgreSQL connection URLs: validate, normalise, parse, build. No psycopg import, so Pulumi components can use it.

Sockets: the Cloud SQL form `postgresql://user:pw@/db?host=/cloudsql/project:region:instance` carries no `sslmode`,
because libpq ignores sslmode on Unix-domain sockets (the Cloud SQL connector already encrypts the hop).

Query parameters: only those in QUERY_PARAMETERS are accepted. Everything else libpq would take is refused rather
than copied into service URLs and pg_dump's argv unchecked: `password` / `user` (credentials belong before the host,
where they are never shown), `sslpassword` (a secret with no environment-variable form, so it would reach argv),
`dbname` / `port` (they would silently override the path and host:port the messages name), and `options` (it could
change the role or search_path under the release, which sets its own session).

Errors never repeat the URL, which may hold a password: they are fixed sentences, naming at most a query parameter
(a plain lower-case name) or sslmode's value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, quote, unquote, unquote_to_bytes, urlsplit

from dbops.errors import DbopsError

SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PORT = 5432
QUERY_PARAMETERS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "host",  # a Unix-socket directory, e.g. Cloud SQL's /cloudsql/project:region:instance
    # The numeric address the socket goes to (a tunnel's 127.0.0.1) while the host name stays what verify-full
    # checks the certificate against (libpq `hostaddr`; docs/tls.md).
    "hostaddr",
    "connect_timeout",
    "application_name",
)
# The admin's client certificate: a service URL must not log in with it.
CLIENT_CERTIFICATE = ("sslcert", "sslkey")
FORMAT = "postgresql://user:password@host:port/database"
# libpq accepts %XX with two hex digits, except %00.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")
_PARAMETER_NAME = re.compile(r"[a-z_]{1,40}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")


def _normalized(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        shown = f"{scheme}://" if sep and _SCHEME.fullmatch(scheme) else "no scheme" if not sep else "another scheme"
        raise DbopsError(
            f"the database URL must start with postgresql://, postgres:// or postgresql+psycopg://, not {shown}"
        )
    return f"postgresql://{rest}"


def normalize_url(url: str) -> str:
    """`postgres://` and `postgresql+psycopg://` -> `postgresql://` (what libpq accepts); other schemes are refused.

    The result is checked as `split_url` checks it, so what reaches libpq is a URL it parses.
    """
    normalized = _normalized(url)
    _checked_split(normalized)
    return normalized


def _checked_split(normalized: str) -> tuple[SplitResult, dict[str, str]]:
    if _BAD_ESCAPE.search(normalized):
        raise DbopsError(
            "the database URL has an invalid percent-escape; write a literal % as %25 and every escape as % followed "
            "by two hex digits (not %00)"
        )
    try:
        unquote_to_bytes(normalized).decode("utf-8")
    except UnicodeDecodeError:
        raise DbopsError(
            "the database URL has percent-escapes that do not decode to UTF-8 text; encode each character's UTF-8 "
            "bytes (e.g. é as %C3%A9)"
        ) from None
    if "#" in normalized:
        raise DbopsError("the database URL has a # that is not percent-encoded; write it as %23 (e.g. in the password)")
    if any(ch.isspace() for ch in normalized):
        raise DbopsError(
            "the database URL has a space or other white space that is not percent-encoded; write a space as %20"
        )
    # libpq ends the user info at the first @, Python's split at the last: a second @ would send part of the password
    # to the DNS resolver. Only an encoded @ (%40) is unambiguous.
    authority = re.split(r"[/?]", normalized.partition("://")[2], maxsplit=1)[0]
    if authority.count("@") > 1:
        raise DbopsError(
            "the database URL has an @ that is not percent-encoded in its user name or password, so the host is "
            "ambiguous; write it as %40"
        )
    # urlsplit's and .port's messages quote the URL, which may hold a password: fixed sentences instead.
    try:
        parts = urlsplit(normalized)
    except ValueError:
        raise DbopsError(
            f"the database URL has an unclosed or invalid [IPv6] host; use {FORMAT}, with an IPv6 host in brackets "
            "like [::1]"
        ) from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise DbopsError("the database URL has an invalid port; use host:port with a port from 1 to 65535")
    return parts, _query(parts.query)


def _query(query: str) -> dict[str, str]:
    """The query's parameters, decoded as libpq decodes them (`+` stays `+`); only QUERY_PARAMETERS are allowed."""
    params: dict[str, str] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        raw_name, sep, raw_value = pair.partition("=")
        name = unquote(raw_name)
        if name in ("password", "user"):
            raise DbopsError(
                f"the database URL has a {name} query parameter; put the credentials before the host "
                f"({FORMAT}), where they are never shown"
            )
        if name not in QUERY_PARAMETERS:
            shown = f"{name!r}" if _PARAMETER_NAME.fullmatch(name) else "with an unusual name"
            raise DbopsError(
                f"the database URL has a query parameter {shown} that is not allowed; allowed: "
                f"{', '.join(QUERY_PARAMETERS)}"
            )
        if not sep:
            raise DbopsError(f"the database URL's query parameter {name!r} has no value; write {name}=VALUE")
        if "=" in raw_value:
            raise DbopsError(
                f"the database URL's query parameter {name!r} has an = in its value that is not percent-encoded; "
                "write it as %3D"
            )
        params[name] = unquote(raw_value)
    return params


def split_url(url: str) -> tuple[SplitResult, dict[str, str]]:
    """The checked, normalised URL split into parts, and its (allowed) query parameters."""
    return _checked_split(_normalized(url))


def _hostname(parts: SplitResult) -> str | None:
    """The host as libpq reads it: case kept (Python's `hostname` lower-cases it), brackets off, percent-decoded."""
    netloc = _netloc_host(parts)
    if netloc.startswith("["):
        return unquote(netloc[1 : netloc.index("]")]) or None
    return unquote(netloc.rpartition(":")[0] if ":" in netloc else netloc) or None


def _netloc_host(parts: SplitResult) -> str:
    """`host:port` as written (brackets kept), without the credentials."""
    return parts.netloc.rpartition("@")[2]


def _with_query(base: str, params: dict[str, str]) -> str:
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='/:')}" for k, v in params.items())
    return base + (f"?{query}" if query else "")


@dataclass(frozen=True)
class DatabaseUrl:
    """A checked PostgreSQL URL, parsed once at the edge and passed inward (connect, migrate, service URLs).

    `password` and `conninfo` (the normalised URL that libpq is given, password included) are kept out of repr.
    """

    user: str
    password: str = field(repr=False)
    host: str | None  # None when connecting over a Unix socket (`socket_dir`)
    port: int
    database: str
    sslmode: str | None
    socket_dir: str | None = None
    conninfo: str = field(default="", repr=False, compare=False)
    # `host:port` and the path as written, and the allowed query parameters: what another login's URL keeps.
    netloc_host: str = field(default="", repr=False, compare=False)
    path: str = field(default="", repr=False, compare=False)
    query: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)

    def with_credentials(self, *, user: str, password: str) -> str:
        """The same server, database and query as this URL, logged in as another user (see `with_credentials`)."""
        return _login_url(self.netloc_host, self.path, dict(self.query), user=user, password=password)

    @property
    def location(self) -> str:
        """Where the server is, for messages: `host:port`, or the socket directory."""
        if self.socket_dir is not None:
            return f"socket {self.socket_dir}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(url: str) -> DatabaseUrl:
    """Parse a PostgreSQL URL; raises DbopsError (never echoing the URL, which may hold a password)."""
    conninfo = _normalized(url)
    parts, query = _checked_split(conninfo)
    port = parts.port or DEFAULT_PORT
    database = unquote(parts.path.removeprefix("/"))  # one slash only, as libpq reads it
    user = unquote(parts.username or "")
    if not database:
        raise DbopsError("the database URL names no database; add /<database> after the host")
    if not user:
        raise DbopsError(f"the database URL names no user; use {FORMAT}")
    sslmode = query.get("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        raise DbopsError(f"the database URL has sslmode={sslmode!r}; allowed: {', '.join(SSLMODES)}")
    query_host = query.get("host")
    socket_dir = query_host if query_host and query_host.startswith("/") else None
    host = None if socket_dir else (query_host or _hostname(parts))
    if socket_dir is None and not host:
        raise DbopsError(f"the database URL names no host; use {FORMAT}")
    return DatabaseUrl(
        user=user,
        password=unquote(parts.password or ""),
        host=host,
        port=port,
        database=database,
        sslmode=sslmode,
        socket_dir=socket_dir,
        conninfo=conninfo,
        netloc_host=_netloc_host(parts),
        path=parts.path,
        query=tuple(query.items()),
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
    sslrootcert: str | None = None,
    hostaddr: str | None = None,
) -> str:
    """`postgresql://user:pw@host:port/db?sslmode=…[&sslrootcert=…][&hostaddr=…]`, or with `socket_dir` the Cloud
    SQL socket form (no sslmode)."""
    if sslmode not in SSLMODES:
        raise ValueError(f"sslmode {sslmode!r} is not one of {', '.join(SSLMODES)}")
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    path = quote(database, safe="")
    if socket_dir is not None:
        return f"postgresql://{credentials}@/{path}?host={quote(socket_dir, safe='/:')}"
    netloc_host = f"[{host}]" if ":" in host else host
    extra = {key: value for key, value in (("sslrootcert", sslrootcert), ("hostaddr", hostaddr)) if value}
    return _with_query(f"postgresql://{credentials}@{netloc_host}:{port}/{path}", {"sslmode": sslmode, **extra})


def with_credentials(url: str, *, user: str, password: str) -> str:
    """The same server, database and query (sslmode, socket host…) as `url`, logged in as another user.

    The admin's client certificate (sslcert, sslkey) is left out: a service logs in with its own password only.
    """
    parts, query = split_url(url)
    return _login_url(_netloc_host(parts), parts.path, query, user=user, password=password)


def _login_url(netloc_host: str, path: str, query: dict[str, str], *, user: str, password: str) -> str:
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    kept = {k: v for k, v in query.items() if k not in CLIENT_CERTIFICATE}
    return _with_query(f"postgresql://{credentials}@{netloc_host}{path}", kept)


def with_parameters(url: str, **params: str) -> str:
    """The same URL (credentials included) with these query parameters set (e.g. `sslrootcert`)."""
    parts, query = split_url(url)
    return _with_query(f"postgresql://{parts.netloc}{parts.path}", {**query, **params})


def without_password(url: str, database: str | None = None) -> str:
    """The URL without its password (safe for argv and output), optionally naming another database."""
    parts, query = split_url(url)
    user = parts.username or ""  # still percent-encoded, as written
    netloc = f"{user}@{_netloc_host(parts)}" if user else _netloc_host(parts)
    path = f"/{quote(database, safe='')}" if database is not None else parts.path
    return _with_query(f"postgresql://{netloc}{path}", query)


def with_database(url: str, database: str) -> str:
    """The same URL (credentials included) naming another database on the same server."""
    parts, query = split_url(url)
    return _with_query(f"postgresql://{parts.netloc}/{quote(database, safe='')}", query)
