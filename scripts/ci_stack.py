"""What CI needs to know about a stack before `pulumi preview` / `pulumi up`, read from Pulumi.<stack>.yaml.

    venv/bin/python scripts/ci_stack.py STACK [--deploy] >> "$GITHUB_OUTPUT"

prints `name=value` lines: `provider`, and per provider what the credentials step and the release tunnel
(`scripts/ci-tunnel`) need. With `--deploy` it also checks that the stack's `releaseUrl` names a local end that
provider's tunnel can serve (README "Reaching the database"), so a deploy stops before `pulumi up` with one sentence
instead of timing out in the release. Errors: one sentence on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.settings import SettingsError, _release_tunnel  # noqa: E402
from dbops import names  # noqa: E402

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Tunnel:
    """How CI reaches a provider's database for the release, and what the stack's releaseUrl must say for it."""

    command: str  # what scripts/ci-tunnel runs, for messages
    sslmodes: tuple[str | None, ...]  # releaseUrl sslmodes that work through it (None: the database's own)
    example: str  # the releaseUrl README documents


TUNNELS: dict[str, Tunnel] = {
    # WireGuard carries the traffic; unmanaged Fly Postgres serves no TLS.
    "fly": Tunnel("fly proxy", (None, "disable"), "postgresql://127.0.0.1:15432?sslmode=disable"),
    # SSM forwards raw TCP: the TLS session is the database's own, so plaintext is never right. Without an sslmode
    # the release verifies the endpoint's own name through the tunnel (verify-full, libpq hostaddr).
    "aws": Tunnel("aws ssm start-session (AWS-StartPortForwardingSessionToRemoteHost)",
                  (None, "require", "verify-ca", "verify-full"), "postgresql://127.0.0.1:15432"),
    # The Auth Proxy's local listener is plaintext; the proxy encrypts and authorises the hop itself.
    "gcp": Tunnel("cloud-sql-proxy", ("disable",), "postgresql://127.0.0.1:15432?sslmode=disable"),
}


class StackError(Exception):
    """The stack file cannot be deployed from CI; the message is one sentence."""


def describe(stack: str, config: Mapping[str, Any], *, deploy: bool) -> dict[str, str]:
    """The outputs for `stack` whose Pulumi.<stack>.yaml `config:` is `config`."""
    provider = config.get("gaia-db:provider")
    if provider not in TUNNELS:
        if provider == "local":
            raise StackError(f"the {stack} stack's provider is local: it runs on a workstation, not from CI")
        raise StackError(f"gaia-db:provider in Pulumi.{stack}.yaml is {provider!r}, but CI deploys fly, aws or gcp")
    environment = str(config.get("gaia-db:environment") or stack)
    out = {"provider": provider, "environment": environment}
    section = config.get(f"gaia-db:{provider}") or {}
    if provider == "fly":
        out["fly_app"] = section.get("appName") or names.cloud_name("fly", environment)
    elif provider == "aws":
        region = config.get("aws:region")
        if not region:
            raise StackError(f"aws:region is not set in Pulumi.{stack}.yaml, but CI assumes its role in that region; "
                             f"set it with `pulumi config set aws:region REGION --stack {stack}`")
        out["aws_region"] = str(region)
        out["aws_identifier"] = section.get("identifier") or names.cloud_name("aws", environment)
        out["aws_bastion"] = f"{out['aws_identifier']}-bastion" if section.get("bastion") not in (None, False) else ""
    else:
        project, region = config.get("gcp:project"), config.get("gcp:region")
        if not project or not region:
            raise StackError(f"gcp:project and gcp:region must be set in Pulumi.{stack}.yaml for CI to reach the "
                             "instance")
        instance = section.get("instanceName") or names.cloud_name("gcp", environment)
        out["gcp_instance"] = f"{project}:{region}:{instance}"
        out["gcp_private_ip"] = "true" if section.get("privateNetwork") else "false"
    if deploy:
        out["release_port"] = str(_release_port(stack, provider, config, out))
    return out


def _release_port(stack: str, provider: str, config: Mapping[str, Any], out: Mapping[str, str]) -> int:
    tunnel = TUNNELS[provider]
    value = config.get("gaia-db:releaseUrl")
    if value is None:
        raise StackError(f"gaia-db:releaseUrl is not set in Pulumi.{stack}.yaml, but CI reaches the {provider} "
                         f"database through {tunnel.command}: set it to {tunnel.example}")
    if not isinstance(value, str):
        raise StackError(f"gaia-db:releaseUrl in Pulumi.{stack}.yaml is encrypted, but CI must read its port before "
                         f"`pulumi up`: set it in plain text (it holds no credential), e.g. {tunnel.example}")
    try:
        parsed = _release_tunnel(value)
    except SettingsError as error:
        raise StackError(str(error).rstrip(".")) from None
    if parsed.host not in LOCAL_HOSTS:
        raise StackError(f"gaia-db:releaseUrl in Pulumi.{stack}.yaml names host {parsed.host}, but CI's "
                         f"{tunnel.command} listens on 127.0.0.1: set it to {tunnel.example}")
    if parsed.sslmode not in tunnel.sslmodes:
        allowed = " or ".join("none" if mode is None else mode for mode in tunnel.sslmodes)
        raise StackError(f"gaia-db:releaseUrl in Pulumi.{stack}.yaml has sslmode={parsed.sslmode or 'none'}, but "
                         f"through {tunnel.command} it must be {allowed}: set it to {tunnel.example}")
    if provider == "aws" and not out["aws_bastion"]:
        raise StackError(f"gaia-db:aws.bastion is not set in Pulumi.{stack}.yaml, but CI's SSM port forwarding "
                         "goes through the bastion the stack declares: set `aws: {bastion: true}` and deploy once "
                         "from a workstation (docs/RUNBOOK.md §7)")
    return parsed.port


def load(stack: str, root: Path = ROOT) -> dict[str, Any]:
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise StackError(f"there is no {path.name}: the stack name must be one of the Pulumi.<stack>.yaml files")
    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    return {key: (None if isinstance(value, dict) and set(value) == {"secure"} and key != "gaia-db:releaseUrl"
                  else value) for key, value in config.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stack")
    parser.add_argument("--deploy", action="store_true", help="also check releaseUrl and print release_port")
    args = parser.parse_args(argv)
    try:
        outputs = describe(args.stack, load(args.stack), deploy=args.deploy)
    except StackError as error:
        print(f"error: {error}.", file=sys.stderr)
        return 1
    for key, value in outputs.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
