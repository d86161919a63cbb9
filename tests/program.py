"""Evaluate the real Pulumi program (`__main__.py`) under the SDK's mock engine and record what it declares.

The recording monitor keeps what the engine would receive: each resource's type, name, inputs, which inputs are
secret, its options (protect, parent, dependencies, additional secret outputs), and the stack outputs with their
secretness. Nothing here talks to a cloud or to the Pulumi CLI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import runpy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "gaia-db"
SECRET_SIG = rpc._special_secret_sig  # the marker the SDK puts on a secret value on the wire


@dataclass
class Declared:
    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    secret_inputs: set[str]
    protect: bool
    parent: str
    dependencies: list[str]
    additional_secret_outputs: list[str]
    custom: bool
    ignore_changes: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)  # what a component registered
    secret_outputs: set[str] = field(default_factory=set)


@dataclass
class Evaluation:
    resources: list[Declared] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name_suffix: str = "") -> Declared:
        found = [r for r in self.of_type(typ) if r.name.endswith(name_suffix)]
        assert len(found) == 1, f"expected one {typ} ending {name_suffix!r}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Declared:
        return next(r for r in self.resources if r.urn == urn)


def unwrap(value: Any) -> Any:
    """A deserialised value with the SDK's secret wrappers removed (secretness is recorded separately)."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == SECRET_SIG:
            return unwrap(value["value"])
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


def _secret_paths(struct: Any) -> set[str]:
    """Top-level property names whose value is (or contains) a secret on the wire."""
    as_dict = json_format.MessageToDict(struct)
    return {key for key, value in as_dict.items() if SECRET_SIG in json.dumps(value)}


# The default VPC's subnets and the ones tests name, each pair in two zones as a real subnet group needs.
SUBNET_ZONES = {
    "subnet-0aaaaaaaaaaaaaaaa": "us-west-2a", "subnet-0bbbbbbbbbbbbbbbb": "us-west-2b",
    "subnet-0123abcd": "us-west-2a", "subnet-4567abcd": "us-west-2b",
}


def fake_pem(name: str) -> str:
    """A PEM-shaped stand-in for a CA certificate (the program only carries it; real ones are tested with openssl)."""
    body = base64.b64encode(f"fake CA certificate {name}".encode()).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


class FakeCloud(mocks.Mocks):
    """Computed outputs the providers would return, so URLs and hosts come out as they would after `up`.

    `passwords` replaces the generated value of the RandomPasswords whose names end with its keys; `cluster_stdout`,
    when given, is what the Fly cluster script printed (a test that ran it), instead of a made-up summary.
    """

    def __init__(self, passwords: Mapping[str, str] | None = None, cluster_stdout: str | None = None,
                 subnet_zones: Mapping[str, str] | None = None,
                 command_stdout: Mapping[str, str] | None = None) -> None:
        self.passwords = dict(passwords or {})
        self.cluster_stdout = cluster_stdout
        # Command resource-name suffix -> the stdout its script printed (a test that ran it); by default the local
        # primary and the RDS CA bundle print a fake CA certificate, as their scripts print the real one.
        self.command_stdout = {"-primary": fake_pem("local"), "-ca-bundle": fake_pem("rds"),
                               **(command_stdout or {})}
        # subnet id -> availability zone; an unlisted subnet lies in a zone derived from its id.
        self.subnet_zones = {**SUBNET_ZONES, **(subnet_zones or {})}

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ.startswith("aws:") and "name" not in outputs:
            outputs["name"] = f"{args.name}-1a2b3c4"  # Pulumi's auto-naming: the resource name and a random suffix
        name = args.inputs.get("identifier") or args.inputs.get("name") or args.name
        if args.typ == "random:index/randomPassword:RandomPassword":
            chosen = [value for suffix, value in self.passwords.items() if args.name.endswith(suffix)]
            outputs["result"] = chosen[0] if chosen else f"pw-{args.name}-" + "x" * 8
        elif args.typ == "random:index/randomId:RandomId":
            # A new id for new keepers, as a replaced RandomId would have.
            keepers = json.dumps(unwrap(args.inputs.get("keepers") or {}), sort_keys=True)
            outputs["hex"] = hashlib.sha256(keepers.encode()).hexdigest()[:8]
        elif args.typ == "aws:rds/instance:Instance":
            outputs.update(address=f"{name}.c0ffee.us-west-2.rds.amazonaws.com", port=5432,
                           dbName=args.inputs.get("dbName"), username=args.inputs.get("username"))
        elif args.typ == "command:local:Command" and args.name.endswith("-cluster"):
            stdout = self.cluster_stdout
            if stdout is None:
                # The Fly cluster script's JSON summary: one machine per member, the first one primary.
                size = int(unwrap(args.inputs["environment"])["GAIA_FLY_CLUSTER_SIZE"])
                machines = [f"m{index:013x}" for index in range(size)]
                stdout = json.dumps({"clusterId": "digest-1", "primary": machines[0], "replicas": machines[1:]})
            outputs.update(stdout=stdout, stderr="")
        elif args.typ == "command:local:Command":
            printed = [out for suffix, out in self.command_stdout.items() if args.name.endswith(suffix)]
            if printed:
                outputs.update(stdout=printed[0], stderr="")
        elif args.typ == "aws:iam/role:Role":
            outputs["arn"] = f"arn:aws:iam::123456789012:role/{outputs['name']}"
        elif args.typ == "aws:secretsmanager/secret:Secret":
            outputs["arn"] = f"arn:aws:secretsmanager:us-west-2:123456789012:secret:{args.name}-AbCdEf"
        elif args.typ == "aws:rds/proxy:Proxy":
            outputs["endpoint"] = f"{name}.proxy-c0ffee.us-west-2.rds.amazonaws.com"
        elif args.typ == "gcp:sql/databaseInstance:DatabaseInstance":
            outputs.update(publicIpAddress="34.0.0.10", privateIpAddress="10.10.0.5",
                           connectionName=f"gaia-project:us-west1:{name}",
                           serverCaCerts=[{"cert": fake_pem(f"cloudsql {name}"), "commonName": f"C=US,O=Google\\, Inc,"
                                           f"CN=Google Cloud SQL Server CA,dnQualifier={name}"}])
        return f"{args.name}-id", outputs

    def call(self, args: mocks.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        # A plain dict: the mock monitor's tuple form wants a (possibly empty) list of failures.
        if args.token == "aws:ec2/getVpc:getVpc":
            return {"id": args.args.get("id") or "vpc-0default00000000", "cidrBlock": "172.31.0.0/16"}
        if args.token == "aws:ec2/getSubnets:getSubnets":
            return {"ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]}
        if args.token == "aws:ec2/getSubnet:getSubnet":
            subnet = args.args["id"]
            derived = "us-west-2" + "abc"[int(hashlib.sha256(subnet.encode()).hexdigest(), 16) % 3]
            zone = self.subnet_zones.get(subnet) or derived
            return {"id": subnet, "availabilityZone": zone}
        return {}


class RecordingMonitor(mocks.MockMonitor):
    def __init__(self, cloud: mocks.Mocks, evaluation: Evaluation) -> None:
        super().__init__(cloud)
        self.evaluation = evaluation

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.evaluation.resources.append(
                Declared(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    inputs=unwrap(rpc.deserialize_properties(request.object)),
                    secret_inputs=_secret_paths(request.object),
                    protect=request.protect,
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    custom=request.custom,
                    ignore_changes=list(request.ignoreChanges),
                    delete_before_replace=request.deleteBeforeReplace,
                )
            )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        outputs, secret = unwrap(rpc.deserialize_properties(request.outputs)), _secret_paths(request.outputs)
        # The stack's own URN ends in its type and name; a top-level component's URN names the stack type too
        # (`…::pulumi:pulumi:Stack$gaia:index:Publish::…`), so compare the type part exactly.
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack":
            self.evaluation.outputs, self.evaluation.secret_outputs = outputs, secret
        else:
            component = self.evaluation.by_urn(request.urn)
            component.outputs, component.secret_outputs = outputs, secret
        return super().RegisterResourceOutputs(request)


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `gaia-db:` config of Pulumi.<stack>.yaml (comments and all, as the CLI reads it), plus overrides."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = dict(document.get("config") or {})
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def provider_config(stack: str, provider: str, **extra: Any) -> dict[str, Any]:
    """The real Pulumi.<stack>.yaml switched to `provider` the way a user would edit it, plus `extra` keys."""
    base = stack_config(stack)
    overrides: dict[str, Any] = {"gaia-db:provider": provider}
    for section in ("fly", "local"):
        if section != provider and f"gaia-db:{section}" in base:
            overrides[f"gaia-db:{section}"] = None
    if provider != base.get("gaia-db:provider"):
        overrides["gaia-db:releaseUrl"] = None  # the stack file's tunnel is its own provider's (fly proxy)
    if provider == "fly":
        overrides["gaia-db:flyApiToken"] = "fly-api-token-value"  # real stacks set it with `config set --secret`
    if provider == "gcp":
        # A gcp stack names its project and region in the gcp provider's own config.
        overrides.update({"gcp:project": "gaia-project", "gcp:region": "us-west1"})
        if stack == "prod":
            # prod refuses a public-IP-only instance unless the stack opts in (or names a private network).
            overrides["gaia-db:gcp"] = {"allowPublicIp": True}
    overrides.update({f"gaia-db:{key}": value for key, value in extra.items()})
    return stack_config(stack, overrides)


@contextmanager
def _in_dir(directory: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def evaluate(
    stack: str,
    config: Mapping[str, Any],
    *,
    preview: bool = False,
    secret_keys: tuple[str, ...] = ("gaia-db:flyApiToken", "gaia-db:releaseUrl", "gaia-db:adminPassword"),
    cloud: mocks.Mocks | None = None,
    program: Path = ROOT / "__main__.py",
) -> Evaluation:
    """Run `program` (the project's `__main__.py`) for `stack` with `config` (full keys such as
    `gaia-db:provider`) in the program's directory, as the CLI would, and record what it declares."""
    evaluation = Evaluation()
    cloud = cloud or FakeCloud()
    monitor = RecordingMonitor(cloud, evaluation)
    # Pulumi config values are strings; objects travel as JSON, exactly as the CLI hands them to the program.
    as_strings = {key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()}
    set_all_config(as_strings, [key for key in secret_keys if key in as_strings])
    mocks.set_mocks(cloud, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    settings.set_root_resource(None)  # type: ignore[arg-type]  # run_in_stack makes the stack resource, as the CLI does
    with _in_dir(program.parent):
        _sync_await(run_in_stack(lambda: runpy.run_path(str(program), run_name="__main__")))
    return evaluation


def run_error(stack: str, config: Mapping[str, Any]) -> str:
    """The one-sentence error the program stops with for this config (it must stop with one)."""
    try:
        evaluate(stack, config)
    except pulumi.RunError as error:
        return str(error)
    raise AssertionError("the program accepted the config")
