"""`python -m dbops release|health|metrics`: DESIGN.md's JSON contract, and one-sentence errors without tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import psycopg
import pytest
from cli_runner import ROOT, dbops_env, error_line, run_dbops
from dbhelpers import ADMIN_EMAIL, ADMIN_KEY, HEAD, PASSWORDS, query, release_args, release_env
from pgserver import free_port

from dbops import seed
from dbops.names import PASSWORD_LOGINS, SERVICES


def test_release_prints_the_contract_json(admin_url: str) -> None:
    postgres_scheme = admin_url.replace("postgresql://", "postgres://", 1)  # Fly/Heroku style, normalised
    first = run_dbops(*release_args(), env=release_env(postgres_scheme, PASSWORDS))
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert set(out) == {"revision", "serviceUrls", "passwordsChanged", "readerUrl", "secondLoginUrls", "adminApiKey"}
    assert out["revision"] == HEAD
    assert set(out["serviceUrls"]) == set(SERVICES) and out["passwordsChanged"] == list(PASSWORD_LOGINS)
    for service, url in out["secondLoginUrls"].items():  # the second logins: their own login, the service's rights
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (f"gaia_{service}_alt",)
    with psycopg.connect(out["readerUrl"]) as conn:  # the read-only login, never the admin
        assert conn.execute("SELECT current_user").fetchone() == ("gaia_reader",)
    for service, url in out["serviceUrls"].items():
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == (
                f"gaia_{service}",
                admin_url.rsplit("/", 1)[1],
            )
    assert query(admin_url, "SELECT key_hash FROM api_keys WHERE is_active") == [(seed.key_hash(out["adminApiKey"]),)]
    # Progress goes to stderr, never a secret.
    assert "applied 0001_seed_schema" in first.stderr
    assert not any(secret in first.stderr for secret in [*PASSWORDS.values(), out["adminApiKey"]])

    # Run again: the key exists, so it is not reported (nor replaced); with a key handed in, not reported either.
    for key in (None, ADMIN_KEY):
        again = run_dbops(*release_args(), env=release_env(admin_url, PASSWORDS, key))
        assert again.returncode == 0, again.stderr
        assert set(json.loads(again.stdout)) == {"revision", "serviceUrls", "passwordsChanged", "readerUrl",
                                                 "secondLoginUrls"}
    assert query(admin_url, "SELECT key_hash FROM api_keys WHERE is_active") == [(seed.key_hash(ADMIN_KEY),)]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("closed port", r"error: could not reach PostgreSQL at 127\.0\.0\.1:\d+ within 1 s \(connection refused\); "),
        ("bad credentials", r"error: PostgreSQL at 127\.0\.0\.1:\d+ rejected the password for user 'admin_\d+'"),
        (
            "mysql",
            r"error: the database URL must start with postgresql://, postgres:// or postgresql\+psycopg://, "
            r"not mysql://$",
        ),
        ("no url", r"error: set DATABASE_URL to the admin URL of the database"),
        ("bad passwords json", r"error: GAIA_DB_ROLE_PASSWORDS must be a JSON object mapping logins"),
        ("bad email", r"error: admin email 'nobody' is not an e-mail address"),
    ],
)
def test_errors_are_one_sentence_without_traceback(admin_url: str, case: str, expected: str) -> None:
    secret = "Super-Secret-Pw-42"
    url = {
        "closed port": f"postgresql://admin:{secret}@127.0.0.1:{free_port()}/gaia",
        "bad credentials": admin_url.replace(":admin-password@", f":{secret}@"),
        "mysql": f"mysql://root:{secret}@127.0.0.1:3306/gaia",
        "no url": None,
        "bad passwords json": admin_url,
        "bad email": admin_url,
    }[case]
    env = release_env(url)
    if case == "bad passwords json":
        env["GAIA_DB_ROLE_PASSWORDS"] = f'{{"chat": "{secret}"'
    email = "nobody" if case == "bad email" else ADMIN_EMAIL
    out = run_dbops(*release_args("dev", email, "--wait", "1"), env=env)
    assert out.returncode == 1
    assert out.stdout == ""
    line = error_line(out.stderr)
    assert re.match(expected, line), line
    assert secret not in out.stderr


# Each malformed URL holds SECRET where a careless message would repeat it (libpq's and urlsplit's do).
MALFORMED = {
    "bad percent-escape": (
        "postgresql://u:pa%zzSECRET@127.0.0.1:{port}/db",
        r"error: the database URL has an invalid percent-escape; write a literal % as %25 ",
    ),
    "bad IPv6 host": (
        "postgresql://u:SECRET@[bad/db",
        r"error: the database URL has an unclosed or invalid \[IPv6\] host; use postgresql://user:password@host:port/",
    ),
    "unknown query parameter": (
        "postgresql://u:SECRET@127.0.0.1:{port}/db?foo=SECRET",
        r"error: the database URL has a query parameter 'foo' that is not allowed; allowed: sslmode, sslrootcert, ",
    ),
    "password in the query": (
        "postgresql://u@127.0.0.1:{port}/db?sslmode=disable&password=SECRET",
        r"error: the database URL has a password query parameter; put the credentials before the host ",
    ),
    "unencoded #": (
        "postgresql://u:pa#SECRET@127.0.0.1:{port}/db",
        r"error: the database URL has a # that is not percent-encoded; write it as %23",
    ),
}
COMMANDS = {"release": release_args("dev", ADMIN_EMAIL, "--wait", "1"), "health": ["health"], "metrics": ["metrics"]}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_malformed_urls_are_one_sentence_that_never_repeats_the_url(command: str, case: str) -> None:
    url, expected = MALFORMED[case]
    out = run_dbops(*COMMANDS[command], env={"DATABASE_URL": url.format(port=free_port())})
    assert out.returncode == 1, out.stdout + out.stderr  # a usage error, not "unhealthy" (2)
    assert out.stdout == ""
    assert re.match(expected, error_line(out.stderr)), out.stderr
    assert "SECRET" not in out.stdout + out.stderr


def test_usage_errors_name_the_allowed_values() -> None:
    out = run_dbops("release", "--environment", "qa", "--admin-email", ADMIN_EMAIL)
    assert out.returncode == 1 and "Traceback" not in out.stderr  # misuse is 1; 2 means a check found a problem
    assert "argument --environment: invalid choice: 'qa' (choose from 'dev', 'staging', 'prod')" in out.stderr
    assert run_dbops().returncode == 1  # a command is required
    assert run_dbops("health", "--timout", "2").returncode == 1  # a mistyped flag is misuse, never "unhealthy"
    assert run_dbops("health", "--help").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["health", "--timeout", "0"], "argument --timeout: '0' is not a number of seconds > 0"),
        (["health", "--timeout", "inf"], "argument --timeout: 'inf' is not a number of seconds > 0"),
        (["health", "--max-lag", "-1"], "argument --max-lag: '-1' is not a number of seconds >= 0"),
        (["metrics", "--slow-ms", "fast"], "argument --slow-ms: 'fast' is not a number of milliseconds >= 0"),
        (["release", "--environment", "dev", "--admin-email", ADMIN_EMAIL, "--wait", "nan"],
         "argument --wait: 'nan' is not a number of seconds >= 0"),
    ],
)
def test_numeric_options_name_their_unit_and_range(args: list[str], message: str) -> None:
    out = run_dbops(*args, env={"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db"})
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr.rstrip().endswith(message), out.stderr


def test_the_cli_loads_alembic_and_sqlalchemy_only_for_commands_that_migrate() -> None:
    # health, metrics, backup... run on every monitoring tick: they must not pay for Alembic and SQLAlchemy.
    script = (
        "import sys; from dbops import cli; cli.parser().parse_args(['health']); code = cli.main(['metrics']); "
        "heavy = lambda: sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules); print(code, heavy()); "
        "import dbops.release; print(heavy())"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dbops_env(), capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines() == [
        "1 []",  # metrics ran, and stopped at the missing DATABASE_URL
        "['alembic', 'sqlalchemy']",  # the release does load them: the check sees them when they are there
    ]
    assert out.stderr.startswith("error: set DATABASE_URL")
