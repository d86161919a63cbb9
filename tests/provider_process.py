"""Drive the real dynamic-provider process over gRPC, as the Pulumi engine does.

`python -m pulumi.dynamic` is what the engine starts for every Python dynamic resource, with the project directory
as its working directory. It prints its port, then serves the ResourceProvider gRPC service. The engine strips secret
wrappers before sending properties (the dynamic provider does not accept secrets), and so does this driver.

Also here: the release's inputs as the program declares them (`release_props`), for the e2e tests and the benchmark,
and a copy of the project with one more migration (`project_copy_with_revision`), as a developer's next commit has it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import struct_pb2
from program import ROOT
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc
from pulumi.runtime.sync_await import _sync_await

from dbops.names import LOGINS
from dbops.revisions import head_revision
from dbops.urls import parse_url

if TYPE_CHECKING:
    from pgserver import PgServer

RELEASE_TYPE = "pulumi-python:dynamic/gaia:Release"
URN = f"urn:pulumi:test::gaia-db::gaia:index:PortableDatabase${RELEASE_TYPE}::gaia-db-test-release"
# As the program passes them: every managed login, the services and the read-only reader.
ROLE_PASSWORDS = {login: f"{login}-password-0123456789" for login in LOGINS}
ADMIN_EMAIL = "admin@dev.gaia.com"
ADMIN_API_KEY = "gaia_first-admin-key-0123456789"
# A copy of the project the provider process can run the release from: components/ (the provider), dbops/ (the
# release) and migrations/, with alembic.ini.
PROJECT_PARTS = ("components", "dbops", "migrations")


def serialized_release_provider() -> str:
    """The `__provider` property exactly as `pulumi.dynamic.Resource` computes it."""
    from components.release import ReleaseProvider

    return str(serialize_provider(ReleaseProvider()))


def release_props(admin_url: str, **overrides: Any) -> dict[str, Any]:
    """The release's inputs for dev on the database at `admin_url`, as the program declares them (the engine has
    stripped the secret wrappers), with `overrides` on top."""
    target = parse_url(admin_url)
    props: dict[str, Any] = {
        "__provider": serialized_release_provider(),
        "connectionUrl": admin_url,
        "endpoint": f"{target.host}:{target.port}/{target.database}",
        "environment": "dev",
        "adminEmail": ADMIN_EMAIL,
        "rolePasswords": dict(ROLE_PASSWORDS),
        "adminApiKey": ADMIN_API_KEY,
        "migrationHead": head_revision(),
        "waitSeconds": 30,
    }
    props.update(overrides)
    return props


def connections_received(server: PgServer) -> int:
    """Every connection attempt the server saw (log_connections=on), whatever its outcome."""
    return server.log_file.read_text().count("connection received:")


def project_copy_with_revision(tmp_path: Path, filename: str, source: str) -> Path:
    """A copy of the project (what the release and its provider load) under `tmp_path` with one more migration,
    `migrations/versions/<filename>` holding `source`, as a developer's next commit has it. Returns its directory."""
    project = tmp_path / "project"
    for part in PROJECT_PARTS:
        shutil.copytree(ROOT / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "alembic.ini", project / "alembic.ini")
    (project / "migrations" / "versions" / filename).write_text(source)
    return project


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    return _sync_await(rpc.serialize_properties(props, {}))


def _props(struct: struct_pb2.Struct) -> dict[str, Any]:
    return dict(rpc.deserialize_properties(struct, keep_unknowns=True))


class ProviderProcess:
    def __init__(self, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pulumi.dynamic"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        port = self.process.stdout.readline().strip()
        if not port.isdigit():
            self.close()
            raise RuntimeError(f"the provider process did not print its port: {port!r} {self.stderr()!r}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)

    def configure(self) -> provider_pb2.ConfigureResponse:
        return self.stub.Configure(provider_pb2.ConfigureRequest(args=_struct({}), acceptSecrets=True))

    def check(self, news: dict[str, Any], olds: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Any]]:
        response = self.stub.Check(provider_pb2.CheckRequest(urn=URN, olds=_struct(olds or {}), news=_struct(news)))
        return _props(response.inputs), list(response.failures)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> provider_pb2.DiffResponse:
        return self.stub.Diff(provider_pb2.DiffRequest(id=id_, urn=URN, olds=_struct(olds), news=_struct(news)))

    def create(self, props: dict[str, Any], timeout: float = 300) -> tuple[str, dict[str, Any]]:
        response = self.stub.Create(provider_pb2.CreateRequest(urn=URN, properties=_struct(props)), timeout=timeout)
        return response.id, _props(response.properties)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        request = provider_pb2.UpdateRequest(id=id_, urn=URN, olds=_struct(olds), news=_struct(news))
        return _props(self.stub.Update(request, timeout=timeout).properties)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self.stub.Delete(provider_pb2.DeleteRequest(id=id_, urn=URN, properties=_struct(props)))

    def stderr(self) -> str:
        self.close()
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "channel"):
            self.channel.close()

    def __enter__(self) -> ProviderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
