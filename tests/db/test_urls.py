"""dbops.urls and dbops.names: pure functions the Pulumi program calls (no database needed)."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from cli_runner import ROOT

from dbops import connect, health, metrics
from dbops.errors import DbopsError
from dbops.names import LOGIN_ROLES, LOGINS, SERVICE_ROLES, SERVICES, role_name
from dbops.urls import build_url, normalize_url, parse_url, with_credentials, with_database, without_password


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


def test_with_credentials_keeps_server_database_and_options_but_not_the_admins_certificate() -> None:
    admin = ("postgres://admin:secret@db.internal:5433/gaia_dev?sslmode=verify-full&sslrootcert=/etc/ca.pem"
             "&sslcert=/etc/admin.crt&sslkey=/etc/admin.key&application_name=deploy")
    assert with_credentials(admin, user="gaia_auth", password="a b") == (
        "postgresql://gaia_auth:a%20b@db.internal:5433/gaia_dev?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        "&application_name=deploy"
    )


def test_without_password_and_with_database_keep_the_rest() -> None:
    url = "postgresql://ad%40min:s3cret@[::1]:5433/gaia_dev?sslmode=require&sslrootcert=/etc/my%20ca.pem"
    assert without_password(url) == "postgresql://ad%40min@[::1]:5433/gaia_dev?sslmode=require&sslrootcert=/etc/my%20ca.pem"
    assert without_password(url, "copy") == (
        "postgresql://ad%40min@[::1]:5433/copy?sslmode=require&sslrootcert=/etc/my%20ca.pem")
    assert with_database(url, "copy") == (
        "postgresql://ad%40min:s3cret@[::1]:5433/copy?sslmode=require&sslrootcert=/etc/my%20ca.pem")
    # libpq does not read + as a space in a URL; neither do we.
    assert without_password("postgresql://u:p@h/d?application_name=a+b") == "postgresql://u@h/d?application_name=a%2Bb"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:p@h:99999/db", "invalid port"),
        ("postgresql://u:p@h:5432", "names no database"),
        ("postgresql://h:5432/db", "names no user"),
        ("postgresql://u:p@h:0/db", "invalid port; use host:port with a port from 1 to 65535"),
        ("postgresql://u:p@h/db?sslmode=sometimes", "sslmode='sometimes'; allowed: disable, allow, prefer"),
    ],
)
def test_parse_errors_say_what_is_allowed(url: str, message: str) -> None:
    with pytest.raises(DbopsError, match=message):
        parse_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:pa%zzSECRET@h/db", "invalid percent-escape; write a literal % as %25"),
        ("postgresql://u:SECRET%@h/db", "invalid percent-escape"),
        ("postgresql://u:SECRET%00@h/db", "invalid percent-escape"),
        ("postgresql://u:SECRET@[bad/db", r"unclosed or invalid \[IPv6\] host"),
        ("postgresql://u:SECRET@[not-an-address]:5432/db", r"unclosed or invalid \[IPv6\] host"),
        ("postgresql://u:SECRET@h/db?foo=SECRET", "query parameter 'foo' that is not allowed; allowed: sslmode, "),
        ("postgresql://u:p@h/db?SECRET=1", "query parameter with an unusual name that is not allowed"),
        ("postgresql://u:p@h/db?options=-csearch_path%3Dx", "query parameter 'options' that is not allowed"),
        ("postgresql://u:p@h/db?dbname=other", "query parameter 'dbname' that is not allowed"),
        ("postgresql://u:p@h/db?sslpassword=SECRET", "query parameter 'sslpassword' that is not allowed"),
        ("postgresql://u@h/db?password=SECRET", "a password query parameter; put the credentials before the host"),
        ("postgresql://h/db?user=u&password=SECRET", "a user query parameter; put the credentials before the host"),
        ("postgresql://u:p@h/db?sslmode", "query parameter 'sslmode' has no value; write sslmode=VALUE"),
        ("postgresql://u:pa#SECRET@h/db", "a # that is not percent-encoded; write it as %23"),
    ],
)
def test_malformed_urls_are_refused_by_every_reader_without_repeating_them(url: str, message: str) -> None:
    for parse in (parse_url, normalize_url, without_password):
        with pytest.raises(DbopsError, match=message) as caught:
            parse(url)
        assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("error", [psycopg.ProgrammingError, psycopg.InterfaceError])
def test_libpq_refusing_the_url_is_a_fixed_sentence(monkeypatch: pytest.MonkeyPatch, error: type[Exception]) -> None:
    # Whatever libpq refuses that parse_url let through: its message quotes the URL, password included.
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise error('invalid percent-encoded token: "pa%zzSECRET"')

    monkeypatch.setattr(psycopg, "connect", refuse)
    url = "postgresql://u:p@127.0.0.1:5432/db"
    sentence = "libpq could not use the database URL for 127.0.0.1:5432; check its percent-escapes and query parameters"
    with pytest.raises(DbopsError) as caught:
        connect.connect(parse_url(url), wait_seconds=30)
    assert str(caught.value).startswith(sentence)
    with pytest.raises(DbopsError) as caught:
        metrics.collect(url)
    assert str(caught.value).startswith(sentence)
    result = health.check(url)  # never raises
    assert result["status"] == "unhealthy" and result["error"].startswith(sentence)
    assert "SECRET" not in str(result)


def test_health_check_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    assert health.check("postgresql://u:SECRET@[bad/db")["error"].startswith("the database URL has an unclosed")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("postgresql://u:SECRET@h/db")

    monkeypatch.setattr(psycopg, "connect", broken)
    result = health.check("postgresql://u:SECRET@h/db")
    assert result["status"] == "unhealthy" and result["error"] == "the health check failed unexpectedly (RuntimeError)"
    assert "SECRET" not in str(result)


def test_build_rejects_an_unknown_sslmode() -> None:
    with pytest.raises(ValueError, match="sslmode"):
        build_url(user="u", password="p", host="h", port=1, database="d", sslmode="on")


def test_service_role_names() -> None:
    assert SERVICES == ("analytics", "chat", "assets", "auth") and LOGINS == (*SERVICES, "reader")
    assert SERVICE_ROLES == {s: f"gaia_{s}" for s in SERVICES} and role_name("auth") == "gaia_auth"
    assert LOGIN_ROLES == {**SERVICE_ROLES, "reader": "gaia_reader"}
    with pytest.raises(ValueError, match="unknown login 'billing'"):
        role_name("billing")


def test_urls_and_names_import_nothing_heavy() -> None:
    code = (
        "import sys, dbops, dbops.urls, dbops.names; "
        "print(sorted(m for m in ('psycopg', 'sqlalchemy', 'alembic', 'pulumi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
