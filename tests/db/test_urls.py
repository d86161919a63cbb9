"""dbops.urls and dbops.names: pure functions the Pulumi program calls (no database needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dbhelpers import ROOT

from dbops.errors import DbopsError
from dbops.names import SERVICE_ROLES, SERVICES, role_name
from dbops.urls import build_url, normalize_url, parse_url, with_credentials


@pytest.mark.parametrize(
    "url", ["postgres://u:p@h:5432/db", "postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"]
)
def test_normalize(url: str) -> None:
    assert normalize_url(url) == "postgresql://u:p@h:5432/db"


@pytest.mark.parametrize("url", ["mysql://root:pw@h/db", "sqlite:///x.db", "h:5432/db", "postgresql+psycopg2://u@h/d"])
def test_other_schemes_are_refused_without_echoing_the_url(url: str) -> None:
    with pytest.raises(DbopsError, match="must start with postgresql://") as caught:
        normalize_url(url)
    assert "pw" not in str(caught.value)


def test_build_encodes_credentials_and_parse_reads_them_back() -> None:
    url = build_url(
        user="gaia user",
        password="p@ss:w/rd%?#",
        host="db.example.com",
        port=6543,
        database="llm_platform",
        sslmode="require",
    )
    assert url == "postgresql://gaia%20user:p%40ss%3Aw%2Frd%25%3F%23@db.example.com:6543/llm_platform?sslmode=require"
    parsed = parse_url(url)
    assert (parsed.user, parsed.password, parsed.host, parsed.port, parsed.database, parsed.sslmode) == (
        "gaia user",
        "p@ss:w/rd%?#",
        "db.example.com",
        6543,
        "llm_platform",
        "require",
    )
    assert parsed.location == "db.example.com:6543"
    assert "p@ss" not in repr(parsed)


def test_ipv6_host() -> None:
    url = build_url(user="u", password="p", host="::1", port=5432, database="d", sslmode="disable")
    assert url == "postgresql://u:p@[::1]:5432/d?sslmode=disable"
    assert parse_url(url).host == "::1" and parse_url(url).location == "[::1]:5432"


def test_cloud_sql_socket_form() -> None:
    url = build_url(
        user="gaia_dev",
        password="pw",
        host="ignored",
        port=5432,
        database="llm_platform",
        sslmode="require",
        socket_dir="/cloudsql/project:region:gaia-dev",
    )
    # libpq ignores sslmode on Unix sockets, so the socket form carries none.
    assert url == "postgresql://gaia_dev:pw@/llm_platform?host=/cloudsql/project:region:gaia-dev"
    parsed = parse_url(url)
    assert (parsed.host, parsed.socket_dir, parsed.sslmode) == (None, "/cloudsql/project:region:gaia-dev", None)
    assert parsed.location == "socket /cloudsql/project:region:gaia-dev"
    assert with_credentials(url, user="gaia_chat", password="c/p") == (
        "postgresql://gaia_chat:c%2Fp@/llm_platform?host=/cloudsql/project:region:gaia-dev"
    )


def test_with_credentials_keeps_server_database_and_options() -> None:
    admin = "postgres://admin:secret@db.internal:5433/gaia_dev?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert with_credentials(admin, user="gaia_auth", password="a b") == (
        "postgresql://gaia_auth:a%20b@db.internal:5433/gaia_dev?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:p@h:99999/db", "invalid port"),
        ("postgresql://u:p@h:5432", "names no database"),
        ("postgresql://h:5432/db", "names no user"),
        ("postgresql://u:p@h/db?sslmode=sometimes", "sslmode='sometimes'; allowed: disable, allow, prefer"),
    ],
)
def test_parse_errors_say_what_is_allowed(url: str, message: str) -> None:
    with pytest.raises(DbopsError, match=message):
        parse_url(url)


def test_build_rejects_an_unknown_sslmode() -> None:
    with pytest.raises(ValueError, match="sslmode"):
        build_url(user="u", password="p", host="h", port=1, database="d", sslmode="on")


def test_service_role_names() -> None:
    assert SERVICES == ("analytics", "chat", "assets", "auth")
    assert SERVICE_ROLES == {s: f"gaia_{s}" for s in SERVICES} and role_name("auth") == "gaia_auth"
    with pytest.raises(ValueError, match="unknown service 'billing'"):
        role_name("billing")


def test_urls_and_names_import_nothing_heavy() -> None:
    code = (
        "import sys, dbops, dbops.urls, dbops.names; "
        "print(sorted(m for m in ('psycopg', 'sqlalchemy', 'alembic', 'pulumi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
