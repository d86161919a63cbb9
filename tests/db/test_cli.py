"""`python -m dbops release`: DESIGN.md's JSON contract, and one-sentence errors without tracebacks."""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from dbhelpers import ADMIN_EMAIL, ADMIN_KEY, HEAD, PASSWORDS, cli, error_line, query, release_args
from pgserver import free_port

from dbops import seed
from dbops.names import SERVICES


def test_release_prints_the_contract_json(admin_url: str) -> None:
    postgres_scheme = admin_url.replace("postgresql://", "postgres://", 1)  # Fly/Heroku style, normalised
    first = cli(*release_args(), database_url=postgres_scheme, passwords=PASSWORDS)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert set(out) == {"revision", "serviceUrls", "adminApiKey"}
    assert out["revision"] == HEAD
    assert set(out["serviceUrls"]) == set(SERVICES)
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
        again = cli(*release_args(), database_url=admin_url, passwords=PASSWORDS, admin_key=key)
        assert again.returncode == 0, again.stderr
        assert set(json.loads(again.stdout)) == {"revision", "serviceUrls"}
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
        ("bad passwords json", r"error: GAIA_DB_ROLE_PASSWORDS must be a JSON object mapping services"),
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
    extra = {"GAIA_DB_ROLE_PASSWORDS": f'{{"chat": "{secret}"'} if case == "bad passwords json" else {}
    email = "nobody" if case == "bad email" else ADMIN_EMAIL
    out = cli(*release_args("dev", email, "--wait", "1"), database_url=url, extra_env=extra)
    assert out.returncode == 1
    assert out.stdout == ""
    line = error_line(out.stderr)
    assert re.match(expected, line), line
    assert secret not in out.stderr


def test_usage_errors_name_the_allowed_values() -> None:
    out = cli("release", "--environment", "qa", "--admin-email", ADMIN_EMAIL, database_url=None)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --environment: invalid choice: 'qa' (choose from 'dev', 'staging', 'prod')" in out.stderr
    assert cli(database_url=None).returncode == 2  # a command is required
