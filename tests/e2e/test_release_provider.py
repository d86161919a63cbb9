"""The release dynamic resource in the real provider process, driven over gRPC against a real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from pgserver import PgServer
from provider_process import (
    ROLE_PASSWORDS,
    ProviderProcess,
    connections_received,
    project_copy_with_revision,
    release_props,
)
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2

from dbops.revisions import head_revision
from dbops.seed import key_hash
from dbops.urls import build_url, parse_url

DIFF_NONE, DIFF_SOME = provider_pb2.DiffResponse.DIFF_NONE, provider_pb2.DiffResponse.DIFF_SOME


def churned_provider() -> str:
    """Another valid serialisation of the same provider, as a different SDK or dill version may produce."""
    from components.release import ReleaseProvider

    provider = ReleaseProvider()
    provider.serialized_by = "another SDK version"  # type: ignore[attr-defined]
    return str(serialize_provider(provider))


@pytest.fixture
def provider() -> Iterator[ProviderProcess]:
    with ProviderProcess() as process:
        process.configure()
        yield process


def _scalar(url: str, query: str, *params: object) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]


def test_create_diff_update_delete_in_the_provider_process(provider: ProviderProcess, pg: PgServer,
                                                           admin_url: str) -> None:
    props = release_props(admin_url)
    checked, failures = provider.check(props)
    assert failures == [] and checked["migrationHead"] == props["migrationHead"]

    started = time.monotonic()
    id_, outs = provider.create(checked)
    create_seconds = time.monotonic() - started
    print(f"create (fresh database to head, roles, seed) took {create_seconds:.2f} s")
    assert id_ == "gaia-db-release-dev"
    assert outs["revision"] == head_revision()
    # Nothing secret in the outputs: only a digest stands for the credentials.
    for secret in [admin_url, props["adminApiKey"], *ROLE_PASSWORDS.values()]:
        assert secret not in repr(outs)
    assert _scalar(admin_url, "SELECT version_num FROM alembic_version") == head_revision()
    assert _scalar(admin_url, "SELECT key_hash FROM api_keys WHERE is_active") == key_hash(props["adminApiKey"])
    # The reader's password arrives like the services' and is set on gaia_reader (readerUrls log in with it).
    reader = build_url(user="gaia_reader", password=ROLE_PASSWORDS["reader"], host="127.0.0.1", port=pg.port,
                       database=parse_url(admin_url).database, sslmode="disable")
    assert _scalar(reader, "SELECT current_user") == "gaia_reader"

    # A no-op diff, a diff after provider churn and a diff through a tunnel on another port: no change, and not one
    # connection reaches the server.
    before = connections_received(pg)
    assert provider.diff(id_, outs, checked).changes == DIFF_NONE
    churned = dict(checked, __provider=churned_provider())
    assert churned["__provider"] != checked["__provider"]
    assert provider.diff(id_, outs, churned).changes == DIFF_NONE
    tunnel = build_url(user="someone", password="elsewhere", host="127.0.0.1", port=15432, database="x",
                       sslmode="disable")
    assert provider.diff(id_, outs, dict(checked, connectionUrl=tunnel)).changes == DIFF_NONE
    # A preview where a password is not known yet: a change is coming, still decided without the database.
    unknown = dict(checked, rolePasswords=dict(ROLE_PASSWORDS, chat=rpc.UNKNOWN))
    assert provider.diff(id_, outs, unknown).changes == DIFF_SOME
    # Likewise an unknown connection URL (a cluster being replaced), though the URL alone never makes a change: the
    # provider process hands Diff an Unknown object, not the engine's sentinel string.
    assert provider.diff(id_, outs, dict(checked, connectionUrl=rpc.UNKNOWN)).changes == DIFF_SOME
    assert connections_received(pg) == before, "diff must not open a database connection"

    for changed in (
        {"environment": "staging"},
        {"adminEmail": "ops@dev.gaia.com"},
        {"rolePasswords": dict(ROLE_PASSWORDS, auth="a-rotated-auth-password")},
        {"endpoint": "10.0.0.9:5432/llm_platform"},
        {"migrationHead": "0003_something_new"},
    ):
        assert provider.diff(id_, outs, dict(checked, **changed)).changes == DIFF_SOME, changed

    # Rotating the admin key: Diff says update, Update applies it and returns every output again.
    rotated = dict(checked, adminApiKey="gaia_second-admin-key-9876543210")
    assert provider.diff(id_, outs, rotated).changes == DIFF_SOME
    new_outs = provider.update(id_, outs, rotated)
    assert new_outs["revision"] == head_revision() and set(new_outs) >= set(outs)
    assert provider.diff(id_, new_outs, rotated).changes == DIFF_NONE
    active = _scalar(admin_url, "SELECT array_agg(key_hash) FROM api_keys WHERE is_active")
    assert active == [key_hash(rotated["adminApiKey"])]

    # Delete leaves the data alone.
    provider.delete(id_, new_outs)
    assert _scalar(admin_url, "SELECT count(*) FROM users WHERE email = 'admin@dev.gaia.com'") == 1
    assert _scalar(admin_url, "SELECT version_num FROM alembic_version") == head_revision()


NEW_REVISION = '''"""add a feedback table (a later migration)

Revision ID: 0099_feedback
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "0099_feedback"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("feedback", sa.Column("id", sa.Integer, primary_key=True), sa.Column("note", sa.Text))


def downgrade() -> None:
    op.drop_table("feedback")
'''


def test_a_new_migration_in_the_project_means_update_and_the_update_applies_it(pg: PgServer, admin_url: str,
                                                                                tmp_path: Path) -> None:
    # A copy of the project with one more revision, as a developer's next commit would have it.
    project = project_copy_with_revision(tmp_path, "0099_feedback.py", NEW_REVISION.format(down=head_revision()))

    with ProviderProcess() as current:
        current.configure()
        id_, outs = current.create(release_props(admin_url))
    with ProviderProcess(cwd=project) as next_commit:
        next_commit.configure()
        news = release_props(admin_url, migrationHead="0099_feedback")
        assert next_commit.diff(id_, outs, news).changes == DIFF_SOME
        new_outs = next_commit.update(id_, outs, news)
    assert new_outs["revision"] == "0099_feedback"
    assert _scalar(admin_url, "SELECT version_num FROM alembic_version") == "0099_feedback"
    # The table the later migration made follows the matrix: analytics reads it, chat does not.
    analytics = build_url(user="gaia_analytics", password=ROLE_PASSWORDS["analytics"], host="127.0.0.1",
                          port=pg.port, database=parse_url(admin_url).database, sslmode="disable")
    assert _scalar(analytics, "SELECT count(*) FROM feedback") == 0
    chat = analytics.replace("gaia_analytics:" + ROLE_PASSWORDS["analytics"],
                             "gaia_chat:" + ROLE_PASSWORDS["chat"])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _scalar(chat, "SELECT count(*) FROM feedback")


def test_a_database_left_at_another_revision_than_the_programs_head_fails_the_release(
    provider: ProviderProcess, admin_url: str
) -> None:
    # The program says its migrations end at a revision this project's migrations/ does not reach (a program and a
    # migrations/ directory out of step): the release migrates to what it has, then refuses to report success.
    props = release_props(admin_url, migrationHead="0099_not_in_this_project")
    with pytest.raises(grpc.RpcError) as caught:
        provider.create(props)
    details = caught.value.details()  # type: ignore[attr-defined]
    assert details.startswith("components.release.ReleaseFailed: the gaia-db release of dev left the database at "
                              f"revision {head_revision()}, but this program's migrations/ ends at "
                              "0099_not_in_this_project"), details
    assert "Traceback" not in details


def test_check_refuses_a_required_input_missing_or_empty(provider: ProviderProcess) -> None:
    props = release_props("postgresql://gaia_dev:pw@127.0.0.1:9/llm_platform")
    for key in ("adminEmail", "endpoint", "migrationHead", "adminApiKey"):
        for news in (dict(props, **{key: ""}), {k: v for k, v in props.items() if k != key}):
            _, failures = provider.check(news)
            assert [(f.property, f.reason) for f in failures] == [(key, f"{key} is required")], news


def test_a_failed_release_reads_as_one_sentence(provider: ProviderProcess) -> None:
    closed = build_url(user="gaia_dev", password="pw", host="127.0.0.1", port=9, database="llm_platform",
                       sslmode="disable")
    props = release_props(closed, waitSeconds=1)
    with pytest.raises(grpc.RpcError) as caught:
        provider.create(props)
    details = caught.value.details()  # type: ignore[attr-defined]
    assert "Traceback" not in details and "File " not in details
    assert details.startswith("components.release.ReleaseFailed: the gaia-db release of dev failed:")
    assert "127.0.0.1:9" in details and "pw@" not in details
    assert details.count("\n") <= 1


def test_the_provider_cannot_be_loaded_outside_the_project_directory(tmp_path: Path) -> None:
    # What a user sees when the provider process starts elsewhere (README: "Running the release").
    with ProviderProcess(cwd=tmp_path) as elsewhere:
        elsewhere.configure()
        with pytest.raises(grpc.RpcError) as caught:
            elsewhere.check(release_props("postgresql://u:p@127.0.0.1:5432/db"))
    assert "No module named 'components'" in caught.value.details()  # type: ignore[attr-defined]
