"""Issue 21: CI deploys every provider. Per provider, the workflow's credentials and tunnel, the stack's `releaseUrl`
(README "Reaching the database") and the runbook's one-time setup (docs/RUNBOOK.md §7) agree: the same port and
sslmode, and exactly the secrets and variables the workflows read, each where the runbook says it lives. The tunnel
script runs for real against recording stand-ins for `fly`, `aws` and `cloud-sql-proxy` that listen where they are
told; and a preview never needs a database connection."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import ci_stack  # noqa: E402

from components import release as release_module  # noqa: E402
from components.release import DIFF_KEYS, ReleaseProvider, credentials_fingerprint  # noqa: E402

WORKFLOWS = ROOT / ".github" / "workflows"
PROVIDERS = ("fly", "aws", "gcp")
# What each provider's jobs read, and where it lives (docs/RUNBOOK.md §7): (kind, name) -> where.
EVERY = {("variable", "PULUMI_BACKEND_URL"): "repository", ("secret", "PULUMI_CONFIG_PASSPHRASE"): "both"}
NEEDS: dict[str, dict[tuple[str, str], str]] = {
    "fly": {("secret", "FLY_API_TOKEN"): "environment"},
    "aws": {("variable", "AWS_DEPLOY_ROLE_ARN"): "environment", ("variable", "AWS_PREVIEW_ROLE_ARN"): "repository"},
    "gcp": {("variable", "GCP_WORKLOAD_IDENTITY_PROVIDER"): "repository",
            ("variable", "GCP_DEPLOY_SERVICE_ACCOUNT"): "environment",
            ("variable", "GCP_PREVIEW_SERVICE_ACCOUNT"): "repository"},
}
RUNBOOK_HEADINGS = {"fly": "**Fly.io**", "aws": "**AWS**", "gcp": "**Google Cloud**"}
README_ROWS = {"fly": "Fly.io", "aws": "AWS RDS", "gcp": "Cloud SQL"}


def workflow(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return document


def steps(name: str) -> list[dict[str, Any]]:
    (job,) = workflow(name)["jobs"].values()
    found: list[dict[str, Any]] = job["steps"]
    return found


def references(text: str) -> set[tuple[str, str]]:
    return {("secret" if kind == "secrets" else "variable", name)
            for kind, name in re.findall(r"\b(secrets|vars)\.([A-Z][A-Z0-9_]*)", text)}


def runbook_section7() -> str:
    text = (ROOT / "docs" / "RUNBOOK.md").read_text()
    return text[text.index("## 7. CI"):text.index("## 8. ")]


def runbook_part(provider: str) -> str:
    section = runbook_section7()
    start = section.index(RUNBOOK_HEADINGS[provider])
    following = [section.index(h) for h in RUNBOOK_HEADINGS.values() if section.index(h) > start]
    return section[start:min(following, default=len(section))]


def runbook_rows(text: str) -> dict[tuple[str, str], str]:
    """(kind, name) -> where, from the runbook's `| kind | name | where | why |` rows for secrets and variables."""
    rows = {}
    for kind, name, where in re.findall(r"^\| (secret|variable) \| `([A-Z0-9_]+)` \| ([^|]+) \|", text, re.M):
        key = (kind, name)
        where = "environment" if where.startswith("environment") else where.strip()
        rows[key] = "both" if key in rows and rows[key] != where else where
    return rows


def readme_tunnel(provider: str) -> tuple[str, str]:
    """(tunnel command, releaseUrl) of the provider's row in README's "Reaching the database" table."""
    readme = (ROOT / "README.md").read_text()
    row = re.search(rf"^\| {re.escape(README_ROWS[provider])} \| (.*) \| `(postgresql://[^`]+)`[^|`]* \|$", readme,
                    re.M)
    assert row, f"README's tunnel table has no {README_ROWS[provider]} row"
    return row.group(1), row.group(2)


def stack_config(provider: str, release_url: str | None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"gaia-db:provider": provider, "gaia-db:adminEmail": "admin@staging.gaia.com"}
    if provider == "aws":
        config.update({"aws:region": "us-west-2", "gaia-db:aws": {"bastion": True}})
    if provider == "gcp":
        config.update({"gcp:project": "gaia-project", "gcp:region": "us-west1"})
    if release_url is not None:
        config["gaia-db:releaseUrl"] = release_url
    config.update(extra)
    return config


# --- the secrets and variables: the workflows read exactly what the runbook tells you to create ---

def test_the_workflows_read_exactly_the_documented_secrets_and_variables() -> None:
    documented = set(EVERY) | {key for needs in NEEDS.values() for key in needs}
    used = set().union(*(references(path.read_text()) for path in WORKFLOWS.glob("*.yml")))
    assert used == documented, (used - documented, documented - used)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_runbook_lists_each_providers_setup_where_it_lives(provider: str) -> None:
    assert runbook_rows(runbook_part(provider)) == NEEDS[provider]
    assert runbook_rows(runbook_section7()[:runbook_section7().index("**Fly.io**")]) == EVERY


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_providers_steps_read_its_own_credentials_only(provider: str) -> None:
    for name, job_kind in (("deploy-stack.yml", "deploy"), ("preview.yml", "preview")):
        gated = [s for s in steps(name) if s.get("if") == f"steps.stack.outputs.provider == '{provider}'"]
        read = references(yaml.safe_dump(gated))
        other = "PREVIEW" if job_kind == "deploy" else "DEPLOY"
        expected = {key for key in NEEDS[provider] if key[0] == "variable" and other not in key[1]}
        assert read == expected, (name, read, expected)
    # The Fly token reaches the tunnel step only, and only for a Fly stack.
    (tunnel,) = [s for s in steps("deploy-stack.yml") if s.get("run") == "scripts/ci-tunnel"]
    only_fly = "${{ steps.stack.outputs.provider == 'fly' && secrets.FLY_API_TOKEN || '' }}"
    assert tunnel["env"]["FLY_API_TOKEN"] == only_fly


def test_the_oidc_subjects_match_the_jobs() -> None:
    """A cloud trusts a job by its token's `sub`: `environment:<ENV>` for the deploy job (it has an environment),
    `pull_request` for the preview job (it has none). The runbook's trust policies must name the same."""
    deploy = workflow("deploy-stack.yml")["jobs"]["up"]
    preview = workflow("preview.yml")["jobs"]["preview"]
    assert deploy["environment"] == "${{ inputs.stack }}" and deploy["permissions"]["id-token"] == "write"
    assert preview["permissions"]["id-token"] == "write"
    preview_subject = f"environment:{preview['environment']}" if "environment" in preview else "pull_request"
    for provider in ("aws", "gcp"):
        part = runbook_part(provider)
        assert "repo:<OWNER>/<REPO>:environment:<ENV>" in part
        assert f"repo:<OWNER>/<REPO>:{preview_subject}" in part
    # A called workflow gets no permission its caller lacks.
    for stage in workflow("deploy.yml")["jobs"].values():
        assert stage["permissions"]["id-token"] == "write"


# --- the tunnel: workflow, releaseUrl, README and runbook agree per provider ---

@pytest.mark.parametrize("provider", PROVIDERS)
def test_readme_runbook_and_ci_agree_on_the_release_url(provider: str) -> None:
    command, release_url = readme_tunnel(provider)
    assert release_url == ci_stack.TUNNELS[provider].example
    assert f"releaseUrl: {release_url}" in runbook_part(provider)
    port = int(ci_stack.describe("staging", stack_config(provider, release_url), deploy=True)["release_port"])
    assert str(port) in command  # the README's tunnel listens where the releaseUrl points


def test_the_committed_stacks_deploy_through_their_tunnel() -> None:
    for stack in ("dev", "staging", "prod"):
        config = ci_stack.load(stack)
        out = ci_stack.describe(stack, config, deploy=True)
        assert out["release_port"] == "15432"
        assert config["gaia-db:releaseUrl"] == ci_stack.TUNNELS[out["provider"]].example


def test_the_deploy_opens_the_tunnel_before_pulumi_up_and_the_preview_never_does() -> None:
    deploy = steps("deploy-stack.yml")
    names = [s.get("uses", s.get("run", "")) for s in deploy]
    tunnel = names.index("scripts/ci-tunnel")
    up = next(i for i, s in enumerate(deploy) if s.get("with", {}).get("command") == "up")
    credentials = [i for i, s in enumerate(deploy) if s.get("if", "").startswith("steps.stack.outputs.provider")]
    assert max(credentials) < tunnel < up
    (stack_step,) = [s for s in deploy if s.get("id") == "stack"]
    assert "scripts/ci_stack.py --deploy" in stack_step["run"]
    # Every output a step reads is one ci_stack prints.
    text = (WORKFLOWS / "deploy-stack.yml").read_text() + (WORKFLOWS / "preview.yml").read_text()
    printed = {"provider", "environment", "fly_app", "aws_region", "aws_identifier", "aws_bastion", "gcp_instance",
               "gcp_private_ip", "release_port"}
    assert set(re.findall(r"steps\.stack\.outputs\.(\w+)", text)) <= printed
    preview = (WORKFLOWS / "preview.yml").read_text()
    for tunnel_word in ("ci-tunnel", "fly proxy", "start-session", "cloud-sql-proxy", "--deploy", "setup-flyctl",
                        "FLY_API_TOKEN", "refresh"):
        assert tunnel_word not in preview.split("name: preview\n", 1)[1], tunnel_word


# --- ci_stack: what a deploy refuses, in one sentence, before pulumi up ---

@pytest.mark.parametrize(("provider", "release_url", "extra", "said"), [
    ("fly", None, {}, "releaseUrl is not set"),
    ("fly", "postgresql://127.0.0.1:15432?sslmode=require", {}, "must be none or disable"),
    ("aws", "postgresql://127.0.0.1:15432?sslmode=disable", {}, "must be none or require or verify-ca or verify-full"),
    ("gcp", "postgresql://127.0.0.1:15432?sslmode=require", {}, "must be disable"),
    ("gcp", "postgresql://127.0.0.1:15432", {}, "must be disable"),
    ("fly", "postgresql://db.internal:5432?sslmode=disable", {}, "names host db.internal"),
    ("fly", {"secure": "v1:abc"}, {}, "is encrypted"),
    ("aws", "postgresql://127.0.0.1:15432?sslmode=require", {"gaia-db:aws": {}}, "aws.bastion is not set"),
    ("aws", "postgresql://127.0.0.1:15432?sslmode=require", {"aws:region": None}, "aws:region is not set"),
    ("local", None, {}, "runs on a workstation"),
    ("fly", "postgresql://u:pw@127.0.0.1:15432", {}, "without user, password"),
])
def test_a_stack_ci_cannot_deploy_is_refused(provider: str, release_url: Any, extra: dict[str, Any], said: str) -> None:
    config = stack_config(provider, None, **extra)
    if release_url is not None:
        config["gaia-db:releaseUrl"] = release_url
    with pytest.raises(ci_stack.StackError) as refused:
        ci_stack.describe("staging", config, deploy=True)
    assert said in str(refused.value) and "pw" not in str(refused.value)


def test_a_preview_needs_no_release_url() -> None:
    for provider in PROVIDERS:
        out = ci_stack.describe("staging", stack_config(provider, None), deploy=False)
        assert out["provider"] == provider and "release_port" not in out


def test_the_outputs_follow_the_stacks_names() -> None:
    adopted = {"gaia-db:aws": {"bastion": {}, "identifier": "legacy"}}
    aws = ci_stack.describe("prod", stack_config("aws", None, **adopted), deploy=False)
    assert (aws["aws_region"], aws["aws_identifier"], aws["aws_bastion"]) == ("us-west-2", "legacy", "legacy-bastion")
    gcp = ci_stack.describe("prod", stack_config("gcp", None, **{
        "gaia-db:gcp": {"privateNetwork": "projects/p/global/networks/n"}}), deploy=False)
    assert (gcp["gcp_instance"], gcp["gcp_private_ip"]) == ("gaia-project:us-west1:gaia-prod", "true")
    fly = ci_stack.describe("dev", stack_config("fly", None, **{"gaia-db:fly": {"org": "gaia", "appName": "x-db"}}),
                            deploy=False)
    assert fly["fly_app"] == "x-db"
    cli = subprocess.run([sys.executable, str(ROOT / "scripts" / "ci_stack.py"), "--deploy", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1 and cli.stderr.startswith("error: there is no Pulumi.nope.yaml") and not cli.stdout


# --- scripts/ci-tunnel, run for real against recording stand-ins ---

FAKE = textwrap.dedent('''\
    #!{python}
    """A recording stand-in for fly, aws, cloud-sql-proxy: appends its argv to $FAKE_LOG and, asked to open a
    tunnel, listens on the local port it was given (until killed, at most 120 s)."""
    import os, re, socket, sys, time
    name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(" ".join([name, *args]) + "\\n")
    port = None
    if name == "fly" and args[:1] == ["proxy"]:
        port = int(args[1].split(":")[0])
    elif name == "fly" and args[:1] == ["status"]:
        sys.exit(0 if os.environ.get("FAKE_EXISTS", "1") == "1" else 1)
    elif name == "aws" and args[:2] == ["ec2", "describe-instances"]:
        print("i-0123456789abcdef0" if os.environ.get("FAKE_EXISTS", "1") == "1" else "")
    elif name == "aws" and args[:2] == ["rds", "describe-db-instances"]:
        print("gaia-staging.c0ffee.us-west-2.rds.amazonaws.com")
    elif name == "aws" and args[:2] == ["ssm", "start-session"]:
        port = int(re.search(r"localPortNumber=(\\d+)", " ".join(args)).group(1))
    elif name == "cloud-sql-proxy":
        port = int(args[args.index("--port") + 1])
    if port is not None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with open(os.environ["FAKE_PIDS"], "a") as pids:
            pids.write(f"{{os.getpid()}}\\n")
        server.settimeout(120)
        try:
            while True:
                server.accept()[0].close()
        except OSError:
            pass
''')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run_tunnel(tmp_path: Path, provider: str, config: dict[str, Any], exists: bool = True
               ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("fly", "aws", "cloud-sql-proxy", "session-manager-plugin"):
        (bin_dir / name).write_text(FAKE.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    out = ci_stack.describe("staging", config, deploy=True)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "RUNNER_TEMP": str(tmp_path), "TUNNEL_WAIT_SECONDS": "20",
        "FAKE_LOG": str(tmp_path / "calls"), "FAKE_PIDS": str(tmp_path / "pids"), "FAKE_EXISTS": "1" if exists else "0",
        # What deploy-stack.yml's tunnel step hands over: ci_stack's outputs, upper-cased.
        **{key.upper(): value for key, value in out.items()},
    }
    try:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "ci-tunnel")], env=env, capture_output=True,
                              text=True, timeout=60)
    finally:
        pids = tmp_path / "pids"
        for pid in pids.read_text().split() if pids.exists() else []:
            try:
                os.kill(int(pid), 15)
            except ProcessLookupError:
                pass
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return done, calls


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_tunnel_listens_where_the_release_url_points(tmp_path: Path, provider: str) -> None:
    port = free_port()
    url = ci_stack.TUNNELS[provider].example.replace("15432", str(port))
    done, calls = run_tunnel(tmp_path, provider, stack_config(provider, url))
    assert done.returncode == 0, done.stderr
    assert f"listens on 127.0.0.1:{port}" in done.stdout
    expected = {
        "fly": ["fly status --app gaia-db-staging", f"fly proxy {port}:5432 --app gaia-db-staging"],
        "aws": ["aws ec2 describe-instances --filters Name=tag:Name,Values=gaia-staging-bastion "
                "Name=instance-state-name,Values=running --query Reservations[].Instances[].InstanceId --output text",
                "aws rds describe-db-instances --db-instance-identifier gaia-staging --query "
                "DBInstances[0].Endpoint.Address --output text",
                "aws ssm start-session --target i-0123456789abcdef0 --document-name "
                "AWS-StartPortForwardingSessionToRemoteHost --parameters "
                f"host=gaia-staging.c0ffee.us-west-2.rds.amazonaws.com,portNumber=5432,localPortNumber={port}"],
        "gcp": [f"cloud-sql-proxy --port {port} --address 127.0.0.1 gaia-project:us-west1:gaia-staging"],
    }[provider]
    assert calls == expected
    # The README's command for the provider is the one the script runs.
    tool = {"fly": "fly proxy", "aws": "aws ssm start-session", "gcp": "cloud-sql-proxy --port"}[provider]
    command, _ = readme_tunnel(provider)
    assert tool in command and calls[-1].startswith(tool)
    if provider == "aws":
        assert "AWS-StartPortForwardingSessionToRemoteHost" in command and "portNumber=5432" in command


def test_a_private_cloud_sql_instance_is_dialled_on_its_private_ip(tmp_path: Path) -> None:
    port = free_port()
    config = stack_config("gcp", f"postgresql://127.0.0.1:{port}?sslmode=disable",
                          **{"gaia-db:gcp": {"privateNetwork": "projects/p/global/networks/n"}})
    done, calls = run_tunnel(tmp_path, "gcp", config)
    assert done.returncode == 0, done.stderr
    assert calls == [f"cloud-sql-proxy --port {port} --address 127.0.0.1 --private-ip "
                     "gaia-project:us-west1:gaia-staging"]


@pytest.mark.parametrize(("provider", "said"), [("fly", "does not exist yet"),
                                               ("aws", "no running instance is tagged")])
def test_a_missing_database_says_deploy_from_a_workstation(tmp_path: Path, provider: str, said: str) -> None:
    config = stack_config(provider, ci_stack.TUNNELS[provider].example.replace("15432", str(free_port())))
    done, calls = run_tunnel(tmp_path, provider, config, exists=False)
    assert done.returncode == 1 and said in done.stderr and "docs/RUNBOOK.md" in done.stderr
    assert not [call for call in calls if " proxy " in call or "start-session" in call]


# --- a preview never needs a database connection ---

def test_the_release_decides_a_preview_from_its_inputs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """pulumi preview runs the dynamic provider's check and diff only; neither may reach the database, whether the
    inputs are unknown (a new cluster), unchanged or changed. The release itself (create/update) is the only caller
    of dbops.release."""
    import psycopg

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a preview tried to reach the database")

    monkeypatch.setattr(psycopg, "connect", refuse)
    monkeypatch.setattr("dbops.release.release", refuse)
    news = {"connectionUrl": "postgresql://gaia_admin:pw@127.0.0.1:1/x?sslmode=disable", "endpoint": "h:5432/x",
            "environment": "staging", "adminEmail": "admin@staging.gaia.com",
            "rolePasswords": {"chat": "a"}, "adminApiKey": "gaia_k", "migrationHead": "0002"}
    olds = {"migrationHead": "0002", "environment": "staging", "adminEmail": "admin@staging.gaia.com",
            "endpoint": "h:5432/x", "credentialsFingerprint": credentials_fingerprint({"chat": "a"}, "gaia_k")}
    provider = ReleaseProvider()
    assert provider.check({}, news).failures == []
    assert provider.diff("id", olds, news).changes is False
    # A tunnel on another port is no change either.
    moved = {**news, "connectionUrl": news["connectionUrl"].replace(":1/", ":2/")}
    assert provider.diff("id", olds, moved).changes is False
    assert provider.diff("id", olds, {**news, "migrationHead": "0003"}).changes is True
    unknown = {**news, "endpoint": release_module.rpc.UNKNOWN}
    assert provider.diff("id", olds, unknown).changes is True
    assert "connectionUrl" not in DIFF_KEYS
