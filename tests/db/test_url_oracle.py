"""Finding 7: libpq's own URL parser (psycopg.conninfo) is the oracle for dbops.urls.

Property-based: for every URL the project accepts, libpq reads the same user, password, host (or socket directory),
port, database and sslmode; anything the two could read differently (an unencoded `@` in the password) is refused
with one sentence before any connection is tried.
"""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from dbops.errors import DbopsError
from dbops.release import release
from dbops.urls import DEFAULT_PORT, normalize_url, parse_url, with_credentials, without_password

# Characters that mean something in a URL, plus ordinary and non-ASCII ones.
TRICKY = "@:/?#[]%&=+ ;'\"\\"
text = st.text(alphabet=st.sampled_from(list("abcXYZ019-._~é✓") + list(TRICKY)), min_size=0, max_size=12)


@st.composite
def urls(draw: st.DrawFn) -> str:
    def part(value: str) -> str:
        return quote(value, safe="") if draw(st.booleans()) else value  # sometimes encoded, sometimes raw

    user, password, database = part(draw(text)), part(draw(text)), part(draw(text))
    host = draw(st.sampled_from(["127.0.0.1", "db.example.com", "[::1]", "h", "", part(draw(text))]))
    port = draw(st.sampled_from(["", ":5432", ":1", ":65535", ":0", ":x", ":99999"]))
    credentials = draw(st.sampled_from([f"{user}:{password}@", f"{user}@", ""]))
    query = draw(st.sampled_from(["", "?sslmode=require", "?host=/cloudsql/p:r:i", "?sslmode=verify-full&host=h2",
                                  f"?application_name={part(draw(text))}"]))
    scheme = draw(st.sampled_from(["postgresql", "postgres", "postgresql+psycopg"]))
    return f"{scheme}://{credentials}{host}{port}/{database}{query}"


def libpq_reads(url: str) -> dict[str, str]:
    return conninfo_to_dict(normalize_url(url))  # type: ignore[return-value]


def assert_agree(url: str) -> None:
    try:
        ours = parse_url(url)
    except DbopsError as refused:
        assert "\n" not in str(refused)
        return
    theirs = libpq_reads(url)  # whatever we accept, libpq parses
    assert theirs.get("user", "") == ours.user
    assert theirs.get("password", "") == ours.password
    assert theirs.get("dbname", "") == ours.database
    assert int(theirs.get("port") or DEFAULT_PORT) == ours.port
    assert theirs.get("host") == (ours.socket_dir if ours.socket_dir is not None else ours.host)
    assert theirs.get("sslmode") == ours.sslmode
    # What the project derives from it still agrees with libpq.
    service = libpq_reads(with_credentials(url, user="gaia_chat", password="p@ss:w/rd?#"))
    assert service["user"] == "gaia_chat" and service["password"] == "p@ss:w/rd?#"
    assert service.get("host") == theirs.get("host") and service.get("dbname") == theirs.get("dbname")
    shown = libpq_reads(without_password(url))
    assert "password" not in shown and shown.get("host") == theirs.get("host")


@settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(urls())
def test_the_projects_parsing_and_libpqs_agree_on_every_url_it_accepts(url: str) -> None:
    assert_agree(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:p@ss@127.0.0.1:5432/db",  # libpq: password 'p', host 'ss@127.0.0.1'
        "postgresql://us@er:pw@127.0.0.1:5432/db",
        "postgresql://user:a@b@c@db.example.com/db",
    ],
)
def test_an_unencoded_at_sign_is_refused_in_one_sentence_and_never_retried(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DbopsError) as caught:
        parse_url(url)
    message = str(caught.value)
    assert message.startswith("the database URL has an @ that is not percent-encoded")
    assert "@ss" not in message and "a@b" not in message

    def no_connecting(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an ambiguous URL reached libpq")

    monkeypatch.setattr(psycopg, "connect", no_connecting)
    with pytest.raises(DbopsError, match="an @ that is not percent-encoded"):
        release(url, environment="dev", admin_email="admin@dev.gaia.com", wait_seconds=60)
