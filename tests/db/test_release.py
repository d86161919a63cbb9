"""The release as a whole: idempotent, rotates keys and passwords, keeps secrets out, safe when run 5 at once."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest
from cli_runner import Background, run_dbops
from dbhelpers import ADMIN_EMAIL, ADMIN_KEY, HEAD, PASSWORDS, REVISIONS, query, release_args, release_env
from pgserver import PgServer, free_port, wait_until

from dbops import locking, seed, urls
from dbops.errors import DbopsError
from dbops.names import ADMIN_KEY_PREFIX, PASSWORD_LOGINS, SERVICES
from dbops.release import ReleaseResult, release
from dbops.urls import with_credentials

pytestmark = pytest.mark.xdist_group("release")  # one worker runs this file's module-scoped servers

ACTIVE_KEYS = "SELECT key_hash, name, permissions FROM api_keys WHERE is_active ORDER BY key_hash"


def test_release_twice_is_idempotent(released: tuple[str, ReleaseResult]) -> None:
    url, first = released
    assert first.revision == HEAD and first.applied == REVISIONS
    assert first.admin_api_key is None  # the key was handed in, so there is nothing new to report

    second = release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS, admin_api_key=ADMIN_KEY)
    assert second.revision == HEAD and second.applied == ()
    assert second.service_urls == first.service_urls
    assert query(url, "SELECT email, name FROM users") == [(ADMIN_EMAIL, "Admin")]
    assert query(url, ACTIVE_KEYS) == [(seed.key_hash(ADMIN_KEY), "Admin Key", {"admin": True})]
    assert query(url, "SELECT count(*) FROM api_keys") == [(1,)]
    # The stored hash is SQL's sha256 of the key, i.e. what a service computes to look a key up.
    assert query(
        url,
        "SELECT count(*) FROM api_keys WHERE key_hash = encode(sha256(convert_to(%s, 'UTF8')), 'hex')",
        (ADMIN_KEY,),
    ) == [(1,)]


def test_a_new_key_deactivates_the_old_one_and_no_key_keeps_the_active_one(released: tuple[str, ReleaseResult]) -> None:
    url, _ = released
    new_key = "gaia_rotated-key-abcdefghijklmnop"
    rotated = release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS, admin_api_key=new_key)
    assert rotated.admin_api_key is None
    assert query(url, ACTIVE_KEYS) == [(seed.key_hash(new_key), "Admin Key", {"admin": True})]
    assert query(url, "SELECT is_active FROM api_keys WHERE key_hash = %s", (seed.key_hash(ADMIN_KEY),)) == [(False,)]

    kept = release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS)
    assert kept.admin_api_key is None
    assert query(url, ACTIVE_KEYS) == [(seed.key_hash(new_key), "Admin Key", {"admin": True})]


@pytest.fixture(scope="module")
def fresh_cluster() -> Iterator[PgServer]:
    """A cluster of its own: roles are cluster-wide, and these tests need the service roles not to exist yet."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_missing_secrets_are_generated_only_for_new_roles(fresh_cluster: PgServer) -> None:
    _, admin_url = fresh_cluster.create_database()
    result = release(admin_url, environment="staging", admin_email=ADMIN_EMAIL)
    assert result.admin_api_key is not None and len(result.admin_api_key) >= 40
    assert result.admin_api_key.startswith(ADMIN_KEY_PREFIX)  # the Pulumi program's format too (test_program.py)
    assert result.passwords_changed == PASSWORD_LOGINS  # the services, the reader, the second logins
    assert query(admin_url, ACTIVE_KEYS) == [(seed.key_hash(result.admin_api_key), "Admin Key", {"admin": True})]
    for service in SERVICES:
        with psycopg.connect(result.service_urls[service]) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (f"gaia_{service}",)
    assert result.reader_url is not None
    with psycopg.connect(result.reader_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("gaia_reader",)
    secrets = [result.admin_api_key, result.reader_url, *result.service_urls.values()]
    assert all(secret not in repr(result) for secret in secrets)

    # Finding 3: an existing role's password is never rotated silently: not when none is given, not for a null one.
    lines: list[str] = []
    for given in (None, {"chat": None}):
        again = release(admin_url, environment="staging", admin_email=ADMIN_EMAIL, role_passwords=given,
                        progress=lines.append)
        assert again.admin_api_key is None  # an active admin key exists; it is kept, not replaced
        assert again.passwords_changed == () and again.service_urls == {} and again.reader_url is None
        for service in SERVICES:
            psycopg.connect(result.service_urls[service]).close()  # the old URLs still work
    assert ("passwords kept (not shown): analytics, chat, assets, auth, reader, analytics_alt, chat_alt, assets_alt, "
            "auth_alt; ") in "\n".join(lines)

    # A given password is set; only that one changes.
    given = release(admin_url, environment="staging", admin_email=ADMIN_EMAIL, role_passwords={"chat": "new-chat-pw"})
    assert given.passwords_changed == ("chat",) and set(given.service_urls) == {"chat"}
    psycopg.connect(given.service_urls["chat"]).close()
    psycopg.connect(result.service_urls["auth"]).close()

    # Rotation is explicit: every service not given one gets a new password, and the old URLs stop working.
    rotated = release(admin_url, environment="staging", admin_email=ADMIN_EMAIL, rotate_passwords=True)
    assert rotated.passwords_changed == PASSWORD_LOGINS
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(result.service_urls["auth"]).close()
    for url in rotated.service_urls.values():
        psycopg.connect(url).close()


def test_the_cli_keeps_existing_passwords_and_says_which_changed(fresh_cluster: PgServer) -> None:
    _, admin_url = fresh_cluster.create_database()
    first = run_dbops(*release_args(), env=release_env(admin_url, PASSWORDS))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["passwordsChanged"] == list(PASSWORD_LOGINS)
    kept = run_dbops(*release_args(), env=release_env(admin_url))
    assert kept.returncode == 0, kept.stderr
    out = json.loads(kept.stdout)
    assert out["passwordsChanged"] == [] and out["serviceUrls"] == {} and "readerUrl" not in out
    for service in SERVICES:
        with_login = with_credentials(admin_url, user=f"gaia_{service}", password=PASSWORDS[service])
        psycopg.connect(with_login).close()
    rotated = run_dbops(*release_args("dev", ADMIN_EMAIL, "--rotate-passwords"),
                        env=release_env(admin_url, {"auth": PASSWORDS["auth"]}))
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["passwordsChanged"] == list(PASSWORD_LOGINS)


def test_a_release_parses_its_url_once(admin_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 (7): the URL is parsed at the edge and the parsed value passed inward (connect, adoption, the
    migration sessions, the service and reader URLs); before, one release split the same string eleven times."""
    splits: list[str] = []
    real = urls._checked_split

    def counting(normalized: str) -> object:
        splits.append(normalized)
        return real(normalized)

    monkeypatch.setattr(urls, "_checked_split", counting)
    result = release(admin_url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS,
                     admin_api_key=ADMIN_KEY)
    assert len(splits) == 1
    assert set(result.service_urls) == set(SERVICES) and result.reader_url is not None


def test_service_urls_keep_host_port_database_and_sslmode(admin_url: str) -> None:
    url = admin_url + "?sslmode=disable"
    result = release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS)
    host_db = admin_url.split("@", 1)[1]
    for service, service_url in result.service_urls.items():
        assert service_url.startswith(f"postgresql://gaia_{service}:")
        assert service_url.endswith(f"@{host_db}?sslmode=disable")


def test_secrets_stay_out_of_statements_logs_and_progress(
    pg: PgServer, superuser: psycopg.Connection[tuple[object, ...]], admin_url: str
) -> None:
    lines: list[str] = []
    release(
        admin_url,
        environment="dev",
        admin_email=ADMIN_EMAIL,
        role_passwords=PASSWORDS,
        admin_api_key=ADMIN_KEY,
        progress=lines.append,
    )
    statements = [str(q) for (q,) in superuser.execute("SELECT query FROM pg_stat_statements")]
    # pg_stat_statements keeps utility statements verbatim: the password statements are there, with verifiers only.
    alter_role = [q for q in statements if "ALTER ROLE" in q and "PASSWORD" in q]
    assert len(alter_role) >= len(SERVICES) and all("SCRAM-SHA-256$" in q for q in alter_role)
    log = pg.log_file.read_text()
    for secret in [*PASSWORDS.values(), ADMIN_KEY]:
        assert not any(secret in q for q in statements)
        assert secret not in log
        assert not any(secret in line for line in lines)
    assert lines and lines[-1] == f"done: revision {HEAD}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"environment": "qa"}, "environment 'qa' is not allowed; use one of dev, staging, prod"),
        ({"admin_email": "not-an-email"}, "admin email 'not-an-email' is not an e-mail address"),
        ({"role_passwords": {"billing": "x"}},
         "unknown logins billing; allowed: analytics, chat, assets, auth, reader"),
        ({"role_passwords": {"chat": ""}}, "the chat role password must be a non-empty string"),
        ({"admin_api_key": ""}, "the admin API key must be a non-empty string"),
    ],
)
def test_bad_input_fails_before_connecting(
    kwargs: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[object] = []

    def no_connecting(*args: object, **_kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError("the release tried to connect before checking its input")

    monkeypatch.setattr(psycopg, "connect", no_connecting)
    url = f"postgresql://admin:pw@127.0.0.1:{free_port()}/db"
    args: dict[str, object] = {"environment": "dev", "admin_email": ADMIN_EMAIL, "wait_seconds": 30, **kwargs}
    with pytest.raises(DbopsError) as caught:
        release(url, **args)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert attempts == []


def test_five_concurrent_releases_on_an_empty_database(
    admin_url: str, superuser: psycopg.Connection[tuple[object, ...]]
) -> None:
    dbname = admin_url.rsplit("/", 1)[1]
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'gaia-db-release'"
    # Hold the release lock while the five start, so all of them are polling when it frees: a real race.
    with psycopg.connect(admin_url, autocommit=True) as holder, ExitStack() as children:
        holder.execute("SELECT pg_advisory_lock(%s)", (locking.LOCK_KEY,))
        procs = [children.enter_context(Background(*release_args(), env=release_env(admin_url, PASSWORDS, ADMIN_KEY)))
                 for _ in range(5)]
        assert wait_until(lambda: superuser.execute(waiting, (dbname,)).fetchone() == (5,), timeout=60)
        holder.execute("SELECT pg_advisory_unlock(%s)", (locking.LOCK_KEY,))
        done = [proc.finish() for proc in procs]
    outputs = [(d.stdout, d.stderr) for d in done]

    assert [d.returncode for d in done] == [0] * 5, [err for _, err in outputs]
    assert {json.loads(out)["revision"] for out, _ in outputs} == {HEAD}
    applied = Counter(m for _, err in outputs for m in re.findall(r"^applied (\S+)", err, flags=re.MULTILINE))
    assert applied == Counter(REVISIONS)  # each revision applied exactly once, by one of the five
    assert sum("waiting for another release" in err for _, err in outputs) == 5

    # The server agrees: each DDL statement ran once in this database.
    dbid = superuser.execute("SELECT oid FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    rows = superuser.execute(
        "SELECT query, calls FROM pg_stat_statements WHERE dbid = %s AND "
        "(query LIKE 'CREATE TABLE users%%' OR query LIKE 'CREATE INDEX CONCURRENTLY%%')",
        dbid,
    ).fetchall()
    calls = {str(q): int(str(n)) for q, n in rows}
    assert sorted(calls.values()) == [1, 1], calls
    assert query(admin_url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid OR NOT indisready") == [(0,)]
    assert query(admin_url, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'") == [(15,)]
    assert query(admin_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert query(admin_url, "SELECT count(*) FROM users") == [(1,)]
    assert query(admin_url, ACTIVE_KEYS) == [(seed.key_hash(ADMIN_KEY), "Admin Key", {"admin": True})]


def test_rotating_the_admin_key_touches_only_the_admin_users_keys(released: tuple[str, ReleaseResult]) -> None:
    """Finding 9: another user's key that shares the name "Admin Key" (and admin permissions) stays active."""
    url, _ = released
    other_key = seed.key_hash("gaia_someone-elses-key")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ROLE gaia_owner")
        conn.execute("INSERT INTO users (email, name) VALUES ('ops@dev.gaia.com', 'Ops')")
        conn.execute(
            "INSERT INTO api_keys (user_id, key_hash, name, permissions, is_active) "
            "SELECT id, %s, 'Admin Key', '{\"admin\": true}', true FROM users WHERE email = 'ops@dev.gaia.com'",
            (other_key,),
        )
    release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS,
            admin_api_key="gaia_rotated-key-0123456789abcdef")
    assert query(url, "SELECT is_active FROM api_keys WHERE key_hash = %s", (other_key,)) == [(True,)]
    assert query(url, "SELECT is_active FROM api_keys WHERE key_hash = %s", (seed.key_hash(ADMIN_KEY),)) == [(False,)]


def test_the_admin_email_is_normalised_and_case_variants_are_one_admin(released: tuple[str, ReleaseResult]) -> None:
    """Finding 11: the domain is lower-cased and NFC applied; a case variant of the address is the same admin."""
    url, _ = released
    for variant in ("admin@DEV.Gaia.COM", "Admin@dev.gaia.com", "admin@dev.gaia.com "):
        result = release(url, environment="dev", admin_email=variant, role_passwords=PASSWORDS)
        assert result.admin_api_key is None  # the admin and its active key were found, not made again
    assert query(url, "SELECT email FROM users") == [(ADMIN_EMAIL,)]
    decomposed = "ze\u0301lie@dev.gaia.com"  # e + combining acute: NFC makes it one character
    release(url, environment="dev", admin_email=decomposed, role_passwords=PASSWORDS)
    assert ("z\u00e9lie@dev.gaia.com",) in query(url, "SELECT email FROM users")
    release(url, environment="dev", admin_email="Ops.Lead@OPS.Gaia.COM", role_passwords=PASSWORDS)  # a new admin
    assert ("Ops.Lead@ops.gaia.com",) in query(url, "SELECT email FROM users")  # the local part is kept as given


@pytest.mark.parametrize("email", ["admin@dev.gaia.com\n", "ad\x00min@dev.gaia.com", "ad\u200bmin@dev.gaia.com",
                                   "admin\t@dev.gaia.com"])
def test_an_admin_email_with_control_characters_is_refused(email: str) -> None:
    url = f"postgresql://admin:pw@127.0.0.1:{free_port()}/db"
    with pytest.raises(DbopsError, match=r"^admin email contains a control character"):
        release(url, environment="dev", admin_email=email, wait_seconds=1)


def test_a_superuser_release_keeps_the_verifiers_out_of_the_log_and_pg_stat_statements(
    pg: PgServer, superuser: psycopg.Connection[tuple[object, ...]], admin_url: str
) -> None:
    """Finding 8: where the admin is a superuser (Fly), the password statements are neither logged nor tracked."""
    dbname = admin_url.rsplit("/", 1)[1]
    superuser.execute(f"ALTER ROLE postgres IN DATABASE {dbname} SET log_statement = 'all'")  # type: ignore[arg-type]
    try:
        superuser.execute("SELECT pg_stat_statements_reset()")
        log_before = pg.log_file.stat().st_size
        release(pg.url(dbname=dbname), environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS)
        with pg.log_file.open("rb") as log:
            log.seek(log_before)
            written = log.read().decode(errors="replace")
        assert "CREATE TABLE" in written  # statements are logged in this database: the test is live
        assert "SCRAM-SHA-256$" not in written
        tracked = [str(q) for (q,) in superuser.execute("SELECT query FROM pg_stat_statements")]
        assert not any("SCRAM-SHA-256$" in q for q in tracked)
        assert any("CREATE TABLE" in q for q in tracked)
    finally:
        superuser.execute(f"ALTER ROLE postgres IN DATABASE {dbname} RESET log_statement")  # type: ignore[arg-type]


def test_a_rotation_sets_only_the_changed_login_and_both_logins_keep_working(fresh_cluster: PgServer) -> None:
    """credentialsVersion's alternating logins: the release sets only the password that changed (`unchanged` names the
    ones the database has), so the active login's verifier is untouched and both logins work afterwards."""
    _, admin_url = fresh_cluster.create_database()
    first = release(admin_url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS)
    assert first.passwords_changed == PASSWORD_LOGINS
    verifiers = dict(query(fresh_cluster.url(dbname="postgres"), "SELECT rolname, rolpassword FROM pg_authid "
                                                                 "WHERE rolname LIKE 'gaia\\_%'"))
    rotated = {**PASSWORDS, "chat_alt": "a-new-chat-alt-password"}
    unchanged = [login for login in PASSWORD_LOGINS if login != "chat_alt"]
    second = release(admin_url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=rotated,
                     unchanged_passwords=unchanged)
    assert second.passwords_changed == ("chat_alt",) and set(second.second_login_urls) == {"chat"}
    after = dict(query(fresh_cluster.url(dbname="postgres"), "SELECT rolname, rolpassword FROM pg_authid "
                                                             "WHERE rolname LIKE 'gaia\\_%'"))
    assert {role for role in after if after[role] != verifiers[role]} == {"gaia_chat_alt"}
    for user, password in (("gaia_chat", PASSWORDS["chat"]), ("gaia_chat_alt", rotated["chat_alt"])):
        with psycopg.connect(with_credentials(admin_url, user=user, password=password)) as conn:
            assert conn.execute("SELECT count(*) >= 0 FROM chat_messages").fetchone() == (True,)
