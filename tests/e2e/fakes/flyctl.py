"""A recording stand-in for flyctl, for running the Fly scripts without Fly.io.

- Accepts only subcommands and flags that flyctl has (superfly/flyctl internal/command/..., cited per command below)
  and parses them as cobra/pflag do; an unknown flag, a missing value or a malformed integer fails like flyctl
  (non-zero exit, "Error: unknown flag: --x"). The tables are a subset of flyctl's flags: everything listed exists in
  flyctl, anything not listed is rejected, so the fake is stricter than the real one, never looser.
- Keeps state (apps, machines, volumes, secrets, backup config, the `postgres` user's password) in
  $FAKE_FLY_STATE/state.json and appends every invocation (argv, the stdin it read, the token it saw) to
  $FAKE_FLY_STATE/calls.jsonl.
- Behaves like flyctl where the scripts depend on it: the token comes from FLY_ACCESS_TOKEN or FLY_API_TOKEN (the first
  wins), prompts fail because stdin is not a terminal, `postgres create` prints the generated password on stdout,
  `postgres list --json` prints a sentence when there are no clusters and uses the app name as `ID` (flyctl #5185),
  `secrets import` parses stdin with flyctl's parser, and postgres-flex's `connect` authenticates with the machines'
  deployed OPERATOR_PASSWORD against the role's SCRAM verifier.
- Fails the way flyctl fails (superfly/flyctl at v0.4.87, fly-apps/postgres-flex at v0.2.0, paths cited per command):
  `postgres create` performs flypg/launcher.go's steps in its order - app, Flycast IP, Tigris bucket, secrets, then per
  machine a volume and a launch, then the health-check wait - and never rolls back; FAKE_FLY_FAIL_AT=<step> (app, ip,
  tigris, secrets, volume, launch, health; FAKE_FLY_FAIL_MACHINE=N picks the machine) fails that step and leaves what
  the earlier ones made. Tigris asks the token's user to accept its terms (state "tos_agreed"), app names are global
  (state "foreign_apps"), every secret of a postgres-flex app lists as "Staged", and `postgres backup config` exits 0
  with flexctl's error on its output.
"""

from __future__ import annotations

import json
import os
import re
import sys

# Plain classes and os.path only: this runs dozens of times per test, so it keeps its imports (and start-up) small:
# hashlib, hmac and base64 are imported by the few commands that hash; typing is for the annotations alone.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

STATE_DIR = os.environ.get("FAKE_FLY_STATE", "")


def path_of(name: str) -> str:
    return os.path.join(STATE_DIR, name)


def token_hex(n: int) -> str:
    return os.urandom(n).hex()


class FlyError(Exception):
    pass


# --- flags, as cobra/pflag parse them -------------------------------------------------------------------------------


class Flag:
    def __init__(self, name: str, kind: str, short: str | None = None, aliases: tuple[str, ...] = ()) -> None:
        self.name, self.kind, self.short, self.aliases = name, kind, short, aliases  # kind: bool | string | int


def B(name: str, short: str | None = None, *aliases: str) -> Flag:
    return Flag(name, "bool", short, aliases)


def S(name: str, short: str | None = None, *aliases: str) -> Flag:
    return Flag(name, "string", short, aliases)


def I(name: str, short: str | None = None, *aliases: str) -> Flag:  # noqa: E743
    return Flag(name, "int", short, aliases)


# internal/command/root/root.go: persistent flags
GLOBAL = [S("access-token", "t"), B("verbose"), B("debug")]
# internal/flag/flag.go
APP, CONFIG, ORG, REGION = S("app", "a"), S("config", "c"), S("org", "o"), S("region", "r")
YES, JSON_OUT, DETACH = B("yes", "y", "auto-confirm"), B("json", "j"), B("detach")
# internal/flag/machines.go VMSizeFlags
VM_SIZE_FLAGS = [
    S("vm-size"), I("vm-cpus", None, "cpus"), S("vm-cpu-kind", None, "vm-cpukind"), S("vm-memory", None, "memory"),
    S("vm-max-memory"), I("vm-gpus"), S("vm-gpu-kind", None, "vm-gpukind"), S("host-dedication-id"),
]


class Command:
    def __init__(self, flags: list[Flag], handler: Callable[[Invocation], None], args: tuple[int, int] = (0, 0),
                 reads_stdin: bool = False) -> None:
        self.flags, self.handler, self.reads_stdin = flags, handler, reads_stdin
        self.args = args  # min, max positional arguments (stricter than cobra's legacy "any")


class Invocation:
    def __init__(self, path: tuple[str, ...], values: dict[str, Any], specified: set[str], args: list[str],
                 stdin: str | None, state: dict[str, Any]) -> None:
        self.path, self.values, self.specified, self.args = path, values, specified, args
        self.stdin, self.state = stdin, state

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def has(self, name: str) -> bool:
        return name in self.specified


def parse_flags(argv: list[str], flags: list[Flag]) -> tuple[dict[str, Any], set[str], list[str]]:
    by_name: dict[str, Flag] = {}
    by_short: dict[str, Flag] = {}
    for f in flags + GLOBAL:
        by_name[f.name] = f
        for alias in f.aliases:
            by_name[alias] = f
        if f.short:
            by_short[f.short] = f
    values: dict[str, Any] = {f.name: (False if f.kind == "bool" else 0 if f.kind == "int" else "") for f in flags}
    specified: set[str] = set()
    args: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            args.extend(argv[i:])
            break
        if token.startswith("--"):
            name, eq, inline = token[2:].partition("=")
            f = by_name.get(name)
            if f is None:
                raise FlyError(f"unknown flag: --{name}")
            shown = f"--{name}"
        elif token.startswith("-") and len(token) > 1:
            name, rest = token[1], token[2:]
            f = by_short.get(name)
            if f is None:
                raise FlyError(f"unknown shorthand flag: '{name}' in {token}")
            eq, inline = ("=", rest[1:]) if rest.startswith("=") else ("=" if rest else "", rest)
            shown = f"-{name}"
        else:
            args.append(token)
            continue
        if f.kind == "bool":
            if eq and inline not in ("true", "false", "1", "0"):
                raise FlyError(f'invalid argument "{inline}" for "{shown}" flag: strconv.ParseBool: parsing '
                               f'"{inline}": invalid syntax')
            value: Any = (inline in ("true", "1")) if eq else True
        else:
            if eq:
                raw = inline
            elif i < len(argv):
                raw = argv[i]
                i += 1
            else:
                raise FlyError(f"flag needs an argument: {shown}")
            if f.kind == "int":
                if not re.fullmatch(r"[+-]?\d+", raw):
                    raise FlyError(f'invalid argument "{raw}" for "{shown}" flag: strconv.ParseInt: parsing '
                                   f'"{raw}": invalid syntax')
                value = int(raw)
            else:
                value = raw
        values[f.name] = value
        specified.add(f.name)
    return values, specified, args


# --- state ----------------------------------------------------------------------------------------------------------

# fly-go machine_types.go MachinePresets and the per-CPU memory limits
PRESETS = {f"shared-cpu-{n}x": ("shared", n, 256 * n) for n in (1, 2, 4, 6, 8)} | {
    f"performance-{n}x": ("performance", n, 2048 * n) for n in (1, 2, 4, 6, 8, 10, 12, 14, 16)
}
# internal/command/postgres/create.go MachineVMSizes: what `fly postgres create --vm-size X` alone means
PG_CREATE_SIZES = {
    "shared-cpu-1x": 256, "shared-cpu-2x": 4096, "shared-cpu-4x": 8192, "shared-cpu-8x": 16384,
    "performance-1x": 2048, "performance-2x": 4096, "performance-4x": 8192, "performance-8x": 16384,
    "performance-16x": 32768,
}


# `fly orgs list --json`: slug -> name; a personal organization's slug is always "personal" (fly-go types.go).
DEFAULT_ORGS = {"personal": "Ada Lovelace", "gaia": "Gaia"}


def load() -> dict[str, Any]:
    if not os.path.exists(path_of("state.json")):
        return {"apps": {}}
    with open(path_of("state.json")) as f:
        return json.load(f)


def save(state: dict[str, Any]) -> None:
    with open(path_of("state.json"), "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)


def new_id(prefix: str = "") -> str:
    return prefix + token_hex(7)


def out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def need_app(inv: Invocation) -> dict[str, Any]:
    name = inv.get("app")
    if not name:
        raise FlyError("the config for your app is missing an app name, add an app field to the fly.toml file or "
                       "specify with the -a flag")
    app = inv.state["apps"].get(name)
    if app is None:
        raise FlyError(f'failed to get app: Could not find App "{name}"')
    return app


def need_yes(inv: Invocation, what: str) -> None:
    if not inv.get("yes"):
        raise FlyError(f"yes flag must be specified when not running interactively ({what})")


def prompt(what: str) -> FlyError:
    return FlyError(f"prompt: non interactive ({what} needs a flag when stdin is not a terminal)")


def guest_for(size: str, memory: str | None) -> dict[str, Any]:
    if size not in PRESETS:
        kind = "shared" if size.startswith("shared") else "performance" if size.startswith("performance") else None
        if kind is None:
            raise FlyError(f"invalid machine preset requested, '{size}', expected to start with 'shared' or "
                           "'performance'")
        raise FlyError(f"'{size}' is an invalid machine size, choose one of: "
                       f"{sorted(p for p in PRESETS if p.startswith(kind))}")
    kind, cpus, mem = PRESETS[size]
    if memory is not None:
        if not re.fullmatch(r"\d+", memory):
            raise FlyError(f"invalid size: {memory}")
        mem = int(memory)
    return check_guest({"cpu_kind": kind, "cpus": cpus, "memory_mb": mem})


def check_guest(guest: dict[str, Any]) -> dict[str, Any]:
    # The Machines API's limits (fly-go MIN/MAX_MEMORY_MB_PER_(SHARED_)CPU; internal/machine/update.go steps).
    kind, cpus, mem = guest["cpu_kind"], guest["cpus"], guest["memory_mb"]
    low, high, step = (256, 2048, 256) if kind == "shared" else (2048, 8192, 1024)
    if mem % step or not low * cpus <= mem <= high * cpus:
        raise FlyError(f"invalid machine guest: {cpus} {kind} CPUs allow {low * cpus} to {high * cpus} MB "
                       f"in steps of {step} MB, not {mem} MB")
    return guest


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802 / 7677)."""
    import base64
    import hashlib
    import hmac

    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def password_matches(password: str, verifier: str) -> bool:
    import base64

    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier or "")
    if not match:
        return False
    return scram_verifier(password, base64.b64decode(match.group(2)), int(match.group(1))) == verifier


def failing_at(step: str, machine: int | None = None) -> bool:
    """FAKE_FLY_FAIL_AT names the create step that fails (FAKE_FLY_FAIL_MACHINE the machine, default 0)."""
    if os.environ.get("FAKE_FLY_FAIL_AT") != step:
        return False
    return machine is None or machine == int(os.environ.get("FAKE_FLY_FAIL_MACHINE", "0"))


def add_machine(app: dict[str, Any], region: str, guest: dict[str, Any], size_gb: int, role: str,
                volume: dict[str, Any] | None = None) -> dict[str, Any]:
    volume = volume or add_volume(app, region, size_gb)
    machine_id = new_id()
    volume["attached_machine_id"] = machine_id
    machine = {
        "id": machine_id, "name": machine_id, "state": "started", "region": region,
        "private_ip": f"fdaa:0:1::{len(app['machines']) + 2}",
        # pg create sets these, and no fly_release_version (flypg/launcher.go), hence "Staged" secrets.
        "config": {"guest": dict(guest), "env": {"PRIMARY_REGION": region},
                   "metadata": {"fly-managed-postgres": "true", "managed-by-fly-deploy": "true"},
                   "mounts": [{"volume": volume["id"], "path": "/data", "size_gb": size_gb, "name": "pg_data"}]},
        "checks": [{"name": "role", "status": "passing", "output": role},
                   {"name": "pg", "status": "passing", "output": "[✓] connections"}],
    }
    app["machines"].append(machine)
    return machine


def add_volume(app: dict[str, Any], region: str, size_gb: int) -> dict[str, Any]:
    volume = {"id": new_id("vol_"), "name": "pg_data", "state": "created", "size_gb": size_gb, "region": region,
              "zone": "a1b2", "encrypted": True, "attached_machine_id": None, "snapshot_retention": 5,
              "auto_backup_enabled": True}
    app["volumes"].append(volume)
    return volume


def unhealthy(machine: dict[str, Any], listings: int) -> None:
    """Not yet passing its checks; passing after `listings` more `machine list` calls (the cluster comes up late)."""
    machine["checks"][0]["status"] = "critical"
    machine["healthy_after"] = listings


def find(items: list[dict[str, Any]], item_id: str, kind: str) -> dict[str, Any]:
    for item in items:
        if item["id"] == item_id:
            return item
    raise FlyError(f"failed to get {kind} {item_id}: not found")


def app_json(name: str, app: dict[str, Any]) -> dict[str, Any]:
    # fly-go types.go App has no json tags: Go field names. `ID` is the app's name (flyctl #5185), never an id that a
    # re-created app would change.
    return {"ID": name, "Name": name, "Status": "deployed", "Deployed": True, "Hostname": f"{name}.fly.dev",
            "Organization": {"Slug": app["org"], "Name": app["org"]}}


def role_of(machine: dict[str, Any]) -> str:
    check = machine["checks"][0]
    return str(check["output"]) if check["status"] == "passing" else "error"


def leader(app: dict[str, Any]) -> dict[str, Any]:
    for m in app["machines"]:
        if role_of(m) == "primary":
            return m
    raise FlyError("no active leader found")


def create_bucket(inv: Invocation, app_name: str) -> str:  # flypg/tigris.go, internal/command/extensions/core
    """The Tigris bucket `<app>-postgres`: the terms first, then the bucket and its AWS_* secrets on the app."""
    if not inv.state.get("tos_agreed", True):
        out("By creating a Tigris bucket you agree to the Tigris terms of service")
        raise FlyError("To agree, the --yes flag must be specified when not running interactively")
    buckets = inv.state.setdefault("buckets", {})
    if any(b["app"] == app_name for b in buckets.values()):
        raise FlyError(f"A Tigris Storage bucket named {app_name}-postgres already exists for app {app_name}")
    name, n = f"{app_name}-postgres", 0
    while name in buckets:
        n += 1
        name = f"{app_name}-postgres-{n}"
    buckets[name] = {"app": app_name}
    app = inv.state["apps"][app_name]
    key = "tid_" + token_hex(12)
    extension = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": "tsec_" + token_hex(16),
                 "AWS_ENDPOINT_URL_S3": "https://fly.storage.tigris.dev", "BUCKET_NAME": name}
    app["secrets"].update(extension)
    for k, v in extension.items():  # setSecretsFromExtension prints every value, the secret key included
        out(f"{k}: {v}")
    return f"https://{key}:{extension['AWS_SECRET_ACCESS_KEY']}@fly.storage.tigris.dev/{name}/{app_name}"


def postgres_create(inv: Invocation) -> None:  # internal/command/postgres/create.go, flypg/launcher.go
    apps = inv.state["apps"]
    name = inv.get("name") or (None if not inv.get("generate-name") else new_id("upg-"))
    if not name:
        raise prompt("app name")
    if not inv.get("org"):
        raise prompt("organization")
    if inv.get("org") not in inv.state.get("orgs", DEFAULT_ORGS):  # prompt.Org matches the slug only
        raise FlyError(f"organization {inv.get('org')} not found")
    if not inv.get("region"):
        raise prompt("region")
    custom_machine = any(inv.has(f.name) for f in VM_SIZE_FLAGS if f.name != "vm-size")
    custom = custom_machine or any(inv.has(n) for n in ("volume-size", "vm-size", "initial-cluster-size"))
    if not custom:
        raise prompt("configuration")
    if not inv.get("initial-cluster-size"):
        raise prompt("initial cluster size")
    if custom_machine:
        guest = guest_for(inv.get("vm-size") or "shared-cpu-1x",
                          inv.get("vm-memory") if inv.has("vm-memory") else None)
    else:
        size = inv.get("vm-size")
        if not size:
            raise prompt("VM size")
        if size not in PG_CREATE_SIZES:
            raise FlyError(f'VM size "{size}" is not valid. For a full list of supported sizes use the command '
                           "'flyctl platform vm-sizes'")
        kind, cpus, _ = PRESETS[size]
        guest = {"cpu_kind": kind, "cpus": cpus, "memory_mb": PG_CREATE_SIZES[size]}
    if not inv.get("volume-size"):
        raise prompt("volume size")
    # launcher.go: the memory check is the one thing done before any side effect.
    if inv.get("enable-backups") and guest["memory_mb"] < 512:
        raise FlyError("Backups require at least 512MB of memory. Please use a larger VM size or disable backups.")
    out(f"Creating postgres cluster in organization {inv.get('org')}")

    # 1. The app (createApp); its name is global across Fly.io.
    out("Creating app...")
    if name in apps or name in inv.state.get("foreign_apps", []) or failing_at("app"):
        raise FlyError("Validation failed: Name has already been taken" if not failing_at("app")
                       else "failed to create app: internal server error")
    app: dict[str, Any] = {"org": inv.get("org"), "postgres": True, "machines": [], "volumes": [], "secrets": {},
                           "deployed": {}, "ips": [], "databases": ["postgres"],
                           "backup_config": {"recovery_window": "7d", "requested": None}, "restarts": []}
    apps[name] = app
    # 2. The Flycast address (private_v6), repmgr/flex only.
    if failing_at("ip"):
        raise FlyError("failed to allocate IP address: internal server error")
    app["ips"].append("fdaa:0:1:a7b::" + token_hex(2))
    # 3. The Tigris bucket for --enable-backups.
    archive = None
    if inv.get("enable-backups"):
        out("Creating Tigris bucket for backup storage")
        if failing_at("tigris"):
            raise FlyError("failed to create tigris bucket: timed out waiting for provisioning to complete")
        archive = create_bucket(inv, name)
    # 4. The secrets, in one update.
    out(f"Setting secrets on app {name}...")
    if failing_at("secrets"):
        raise FlyError("failed to set secrets: internal server error")
    password = inv.get("password") or token_hex(8)
    app["secrets"].update({"SU_PASSWORD": token_hex(8), "REPL_PASSWORD": token_hex(8), "OPERATOR_PASSWORD": password,
                           "SSH_KEY": token_hex(8), "SSH_CERT": token_hex(8),
                           "FLY_CONSUL_URL": "https://consul.example/x"})
    if archive:
        app["secrets"]["S3_ARCHIVE_CONFIG"] = archive
    # 5. Per machine, strictly one at a time: a volume, a launch, the wait for "started".
    count = inv.get("initial-cluster-size")
    for i in range(count):
        out(f"Provisioning {i + 1} of {count} machines with image flyio/postgres-flex:17.2")
        if failing_at("volume", i):
            raise FlyError("failed to create volume: failed to create volume: insufficient resources")
        volume = add_volume(app, inv.get("region"), inv.get("volume-size"))
        if failing_at("launch", i):
            raise FlyError("failed to launch VM: insufficient resources to create new machine")
        app["deployed"] = dict(app["secrets"])  # launched with the secrets' current version
        if i == 0:
            app["verifier"] = scram_verifier(password)  # initdb --pwfile with OPERATOR_PASSWORD (internal/flypg)
        add_machine(app, inv.get("region"), guest, inv.get("volume-size"), "primary" if i == 0 else "replica", volume)
        out("Waiting for machine to start...")
    # 6. The health-check wait (watch.MachinesChecks, 300 s): a timeout leaves the machines as they are.
    if failing_at("health"):
        for machine in app["machines"]:
            unhealthy(machine, 2)
        sys.stderr.write(f"  Waiting for {app['machines'][0]['id']} to become healthy (started, 1/3)\n")
        raise FlyError("context deadline exceeded")
    out(f"Postgres cluster {name} created\n  Username:    postgres\n  Password:    {password}\n"
        f"  Hostname:    {name}.internal\n  Proxy port:  5432\n  Postgres port:  5433")


def postgres_list(inv: Invocation) -> None:  # internal/command/postgres/list.go
    apps = [app_json(n, a) for n, a in sorted(inv.state["apps"].items()) if a["postgres"]]
    if not apps:
        out("No postgres clusters found")
    elif inv.get("json"):
        out(json.dumps(apps, indent=2))
    else:
        out("\n".join(a["Name"] for a in apps))


def backups_enabled(app: dict[str, Any]) -> bool:
    # isBackupEnabled looks at the secret list, staged or not (internal/command/postgres/backup.go).
    return "S3_ARCHIVE_CONFIG" in app["secrets"]


def need_backups(inv: Invocation, app: dict[str, Any]) -> None:
    if not backups_enabled(app):
        raise FlyError(f"backups are not enabled. Run `fly pg backup enable -a {inv.get('app')}` to enable them")


def postgres_backup_enable(inv: Invocation) -> None:  # internal/command/postgres/backup.go runBackupEnable
    app = need_app(inv)
    if backups_enabled(app):
        raise FlyError("backups are already enabled")
    if leader(app)["config"]["guest"]["memory_mb"] < 512:
        raise FlyError("backup creation requires at least 512MB of memory.")
    try:
        archive = create_bucket(inv, inv.get("app"))
    except FlyError as error:
        raise FlyError(f"failed to create tigris bucket: {error}") from None
    app["secrets"]["S3_ARCHIVE_CONFIG"] = archive  # stored only: the machines get it on the next deploy
    out(f"Backups enabled. Run `fly secrets deploy -a {inv.get('app')}` to restart the cluster with the new "
        "configuration.")


def flexctl_backups_enabled(app: dict[str, Any]) -> bool:
    """flexctl's own check on the leader: S3_ARCHIVE_CONFIG in the machine's environment (cmd/flexctl/backups.go)."""
    return "S3_ARCHIVE_CONFIG" in app["deployed"]


def postgres_backup_config_show(inv: Invocation) -> None:  # runBackupConfigShow -> flexctl backup config show
    app = need_app(inv)
    need_backups(inv, app)
    if not flexctl_backups_enabled(app):
        out("backups are not enabled")  # flexctl prints its error; ExecOnLeader ignores the exit code
        return
    out(f"  ArchiveTimeout = 60s\n  RecoveryWindow = {app['backup_config']['recovery_window']}\n"
        "  FullBackupFrequency = 24h\n  MinimumRedundancy = 3")


def postgres_backup_config_update(inv: Invocation) -> None:  # runBackupConfigUpdate -> flexctl backup config update
    app = need_app(inv)
    need_backups(inv, app)
    if not flexctl_backups_enabled(app):
        out("backups are not enabled")
        return
    window = inv.get("recovery-window")
    if window:
        # postgres-flex internal/flypg/barman_config.go; the error goes to stdout and flyctl still exits 0.
        if not re.fullmatch(r"(\d+)([dwy])", window) or int(window[:-1]) < 1:
            out(f"error updating configuration: invalid value for recovery_window: {window}")
            return
        app["backup_config"]["requested"] = window
    # internal/api/handle_admin.go handleUpdateBarmanSettings always answers RestartRequired: true.
    out(f"Updated\nA restart is required for these changes to take effect. Run `fly pg restart -a {inv.get('app')}` "
        "to restart.)")


def postgres_restart(inv: Invocation) -> None:  # internal/command/postgres/restart.go: replicas first, then the leader
    app = need_app(inv)
    primary = leader(app)
    for machine in [m for m in app["machines"] if role_of(m) == "replica"] + [primary]:
        out(f"Restarting machine {machine['id']}")
        app["restarts"].append(machine["id"])
    if app["backup_config"].get("requested"):
        app["backup_config"]["recovery_window"] = app["backup_config"]["requested"]
        app["backup_config"]["requested"] = None
    out("Postgres cluster has been successfully restarted!")


def postgres_backup_create(inv: Invocation) -> None:  # internal/command/postgres/backup.go runBackupCreate
    app = need_app(inv)
    need_backups(inv, app)
    if leader(app)["config"]["guest"]["memory_mb"] < 512:
        raise FlyError("backup creation requires at least 512MB of memory.")
    name = inv.get("name") or new_id("barman-")
    app.setdefault("backups", []).append(name)
    out(f"Backup {name} completed")  # flexctl backup create, run on the leader


def postgres_backup_list(inv: Invocation) -> None:  # runBackupList
    app = need_app(inv)
    need_backups(inv, app)
    out("\n".join(["ID", *app.get("backups", [])]))


def postgres_backup_restore(inv: Invocation) -> None:  # runBackupRestore: a NEW app from the WAL archive
    app = need_app(inv)
    need_backups(inv, app)
    target = inv.args[0]
    when = inv.get("restore-target-time")
    if when and not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", when):
        raise FlyError(f"invalid restore target time {when}")  # barman's recovery target parse
    if target in inv.state["apps"]:
        raise FlyError("Validation failed: Name has already been taken")
    source = leader(app)
    new = {"org": app["org"], "postgres": True, "machines": [], "volumes": [], "ips": [],
           "secrets": dict(app["secrets"]), "backup_config": dict(app["backup_config"]), "restarts": [],
           "databases": list(app["databases"]), "restored_from": {"app": inv.get("app"), "target_time": when or None}}
    del new["secrets"]["S3_ARCHIVE_CONFIG"]  # BackupsEnabled: false on the restored cluster
    new["deployed"] = dict(new["secrets"])
    new["verifier"] = app["verifier"]
    inv.state["apps"][target] = new
    add_machine(new, source["region"], source["config"]["guest"], source["config"]["mounts"][0]["size_gb"], "primary")
    out(f"Postgres cluster {target} created")


def apps_list(inv: Invocation) -> None:  # internal/command/apps/list.go
    apps = [app_json(n, a) for n, a in sorted(inv.state["apps"].items())]
    if inv.get("json"):
        out(json.dumps(apps, indent=2))
    else:
        out("\n".join(a["Name"] for a in apps) or "No apps found")


def apps_destroy(inv: Invocation) -> None:  # internal/command/apps/destroy.go: the pg backup bucket stays
    if not inv.args:
        raise FlyError("no app names provided")
    need_yes(inv, "apps destroy")
    for name in inv.args:
        if name not in inv.state["apps"]:
            raise FlyError(f'Could not find App "{name}"')
        del inv.state["apps"][name]
        out(f"Destroyed app {name}")


def orgs_list(inv: Invocation) -> None:  # internal/command/orgs/list.go: {"<slug>": "<name>"}, personal as "personal"
    orgs = inv.state.get("orgs", DEFAULT_ORGS)
    out(json.dumps(orgs, indent=2) if inv.get("json") else "\n".join(orgs))


def storage_destroy(inv: Invocation) -> None:  # internal/command/extensions/tigris/destroy.go
    buckets = inv.state.setdefault("buckets", {})
    if inv.args:
        name = inv.args[0]
    else:
        owned = [n for n, b in buckets.items() if b["app"] == inv.get("app")]
        if not owned:
            raise FlyError(f"no Tigris Storage bucket found for app {inv.get('app')}")
        name = owned[0]
    if name not in buckets:
        raise FlyError(f"Could not find extension {name}")
    need_yes(inv, "storage destroy")
    del buckets[name]
    out(f"Your Tigris object storage bucket {name} was destroyed")


def machine_list(inv: Invocation) -> None:
    app = need_app(inv)
    listed = json.loads(json.dumps(app["machines"]))
    for machine in app["machines"]:  # a late cluster passes its checks after some more listings
        if machine.get("healthy_after") is not None:
            machine["healthy_after"] -= 1
            if machine["healthy_after"] <= 0:
                machine["checks"][0]["status"] = "passing"
                del machine["healthy_after"]
    for machine in listed:
        machine.pop("healthy_after", None)
    out(json.dumps(listed, indent=2) if inv.get("json") else "\n".join(m["id"] for m in listed))


def machine_update(inv: Invocation) -> None:  # internal/command/machine/update.go
    app = need_app(inv)
    if not inv.args:
        raise prompt("machine")
    machine = find(app["machines"], inv.args[0], "machine")
    need_yes(inv, "machine update")
    guest = dict(machine["config"]["guest"])
    if inv.has("vm-size"):
        kind, cpus, mem = guest_for(inv.get("vm-size"), None).values()
        guest = {"cpu_kind": kind, "cpus": cpus, "memory_mb": mem}
    if inv.has("vm-memory"):
        guest["memory_mb"] = int(inv.get("vm-memory"))
    machine["config"]["guest"] = check_guest(guest)
    out(f"Updating machine {machine['id']}")


def machine_clone(inv: Invocation) -> None:  # internal/command/machine/clone.go
    app = need_app(inv)
    if not inv.args:
        raise prompt("machine")
    source = find(app["machines"], inv.args[0], "machine")
    mount = source["config"]["mounts"][0]
    # The new volume takes the size recorded in the source's mount, as clone.go does.
    machine = add_machine(app, inv.get("region") or source["region"], source["config"]["guest"], mount["size_gb"],
                          "replica")
    out(f"Machine {machine['id']} has been created...\nMachine has been successfully cloned!")


def machine_destroy(inv: Invocation) -> None:  # internal/command/machine/destroy.go
    app = need_app(inv)
    for machine_id in inv.args:
        machine = find(app["machines"], machine_id, "machine")
        if machine["state"] == "started" and not inv.get("force"):
            raise FlyError(f"machine {machine_id} is in a started state and cannot be destroyed; use --force")
        app["machines"].remove(machine)
        for volume in app["volumes"]:
            if volume["attached_machine_id"] == machine_id:
                volume["attached_machine_id"] = None
        out(f"machine {machine_id} was found and is currently in started state, attempting to destroy...")


def volumes_list(inv: Invocation) -> None:
    app = need_app(inv)
    out(json.dumps(app["volumes"], indent=2) if inv.get("json") else "\n".join(v["id"] for v in app["volumes"]))


def volumes_extend(inv: Invocation) -> None:  # internal/command/volumes/extend.go
    app = need_app(inv)
    if not inv.args:
        raise prompt("volume")
    volume = find(app["volumes"], inv.args[0], "volume")
    size_flag = inv.get("size")
    if not size_flag:
        raise FlyError("Volume size must be specified")
    size = volume["size_gb"] + int(size_flag[1:]) if size_flag.startswith("+") else int(size_flag)
    if size <= volume["size_gb"]:
        raise FlyError(f"failed to extend volume: size must be greater than the current {volume['size_gb']} GB")
    volume["size_gb"] = size
    for machine in app["machines"]:
        for mount in machine["config"]["mounts"]:
            if mount["volume"] == volume["id"]:
                mount["size_gb"] = size
    out(json.dumps(volume) if inv.get("json") else f"Volume {volume['id']} extended to {size}GB")


def volumes_update(inv: Invocation) -> None:  # internal/command/volumes/update.go
    app = need_app(inv)
    volume = find(app["volumes"], inv.args[0], "volume")
    if inv.get("snapshot-retention"):
        volume["snapshot_retention"] = inv.get("snapshot-retention")
    if inv.has("scheduled-snapshots"):
        volume["auto_backup_enabled"] = inv.get("scheduled-snapshots")
    out(json.dumps(volume) if inv.get("json") else f"Volume {volume['id']} updated")


def volumes_destroy(inv: Invocation) -> None:  # internal/command/volumes/destroy.go
    app = need_app(inv)
    need_yes(inv, "volumes destroy")
    for volume_id in inv.args:
        volume = find(app["volumes"], volume_id, "volume")
        if volume["attached_machine_id"]:
            raise FlyError(f"volume {volume_id} is attached to machine {volume['attached_machine_id']}")
        app["volumes"].remove(volume)
        out(f"Destroyed volume ID: {volume_id}")


def secrets_list(inv: Invocation) -> None:  # internal/command/secrets/list.go
    import hashlib

    app = need_app(inv)
    # The digest is the API's, stable for a stored value; the status comes from the machines' fly_release_version
    # metadata, which machines made by `fly pg create` lack: every secret of a postgres-flex app lists as "Staged".
    rows = [{"name": k, "digest": hashlib.sha256(f"{k}={v}".encode()).hexdigest()[:32], "status": "Staged"}
            for k, v in sorted(app["secrets"].items())]
    out(json.dumps(rows, indent=2) if inv.get("json") else "\n".join(r["name"] for r in rows))


def parse_secrets(text: str) -> dict[str, str]:
    """flyctl's parser, line by line (internal/command/secrets/parser.go)."""
    result: dict[str, str] = {}
    multiline_key: str | None = None
    buffer: list[str] = []
    for line in text.splitlines():
        if multiline_key is not None:
            if line.endswith('"""'):
                buffer.append(line[:-3])
                result[multiline_key] = "\n".join(buffer)
                multiline_key, buffer = None, []
            else:
                buffer.append(line)
            continue
        if line.startswith("#") or not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise FlyError(f"Secrets must be provided as NAME=VALUE pairs ({line} is invalid)")
        key, value = key.strip(), value.lstrip(" ")
        head, hash_sep, _ = value.partition("#")
        if hash_sep and head.count('"') % 2 == 0:
            value = head.rstrip(" ")
        if value.startswith('"""') and value.endswith('"""') and len(value) >= 6:
            result[key] = value[3:-3]
        elif value.startswith('"""'):
            multiline_key, buffer = key, [value[3:]]
        else:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            result[key] = value
    return result


def store_secrets(inv: Invocation, pairs: dict[str, str]) -> None:
    app = need_app(inv)
    if not pairs:
        raise FlyError("requires at least one SECRET=VALUE pair")
    app["secrets"].update(pairs)
    if inv.get("stage"):
        out("Secrets have been staged, but not set on VMs. Deploy or update machines in this app for the secrets to "
            "take effect.")
    else:
        app["deployed"] = dict(app["secrets"])
        out(f"Updating existing machines in '{inv.get('app')}' with rolling strategy")


def secrets_import(inv: Invocation) -> None:  # internal/command/secrets/import.go
    store_secrets(inv, parse_secrets(inv.stdin or ""))


def secrets_set(inv: Invocation) -> None:  # internal/command/secrets/set.go
    pairs = {}
    for arg in inv.args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise FlyError(f"Secrets must be provided as NAME=VALUE pairs ({arg} is invalid)")
        pairs[key] = value
    store_secrets(inv, pairs)


def secrets_unset(inv: Invocation) -> None:  # internal/command/secrets/unset.go (UnsetSecretsAndDeploy)
    app = need_app(inv)
    missing = [name for name in inv.args if name not in app["secrets"]]
    if missing:
        raise FlyError(f"secret {missing[0]} not found")
    for name in inv.args:
        del app["secrets"][name]
    if not inv.get("stage"):
        app["deployed"] = dict(app["secrets"])
        out(f"Updating existing machines in '{inv.get('app')}' with rolling strategy")


def secrets_deploy(inv: Invocation) -> None:  # internal/command/secrets/deploy.go
    app = need_app(inv)
    app["deployed"] = dict(app["secrets"])
    out(f"Updating existing machines in '{inv.get('app')}' with rolling strategy")


ALTER = re.compile(r"ALTER ROLE (\w+) WITH LOGIN PASSWORD '((?:[^']|'')*)';")
SET_LOCAL = re.compile(r"SET LOCAL [\w.]+ = ('[^']*'|-?\d+|\w+);")
SELECT_VERIFIER = "SELECT 'verifier=' || rolpassword FROM pg_authid WHERE rolname = 'postgres';"
CREATE_DATABASE = re.compile(r"SELECT format\('CREATE DATABASE %I', '(\w+)'\) WHERE NOT EXISTS "
                             r"\(SELECT FROM pg_database WHERE datname = '(\w+)'\)\\gexec")


def ssh_console(inv: Invocation) -> None:  # internal/command/ssh/console.go
    app = need_app(inv)
    command = inv.get("command")
    if not command or inv.get("pty"):
        raise FlyError("this fake runs only `--command connect` without a pseudo-terminal")
    words = command.split()
    if words[0] != "connect":
        raise FlyError(f"this fake does not know the remote command {words[0]!r}")
    # postgres-flex bin/connect: psql postgres://$USER:${3:-$OPERATOR_PASSWORD}@$FLY_APP_NAME.internal:5432/$DB
    user = words[2] if len(words) > 2 else "postgres"
    password = words[3] if len(words) > 3 else app["deployed"]["OPERATOR_PASSWORD"]
    if user != "postgres" or not password_matches(password, app["verifier"]):
        sys.stderr.write(f'psql: error: FATAL:  password authentication failed for user "{user}"\n')
        raise SystemExit(2)
    stop_on_error = False
    for line in (inv.stdin or "").splitlines():
        line = line.strip()
        alter, create = ALTER.fullmatch(line), CREATE_DATABASE.fullmatch(line)
        if line == r"\set ON_ERROR_STOP on":
            stop_on_error = True
        elif line in ("BEGIN;", "COMMIT;") or SET_LOCAL.fullmatch(line):
            out(line.split()[0].rstrip(";"))
        elif line == SELECT_VERIFIER:
            out(f"      ?column?\n----------------\n verifier={app['verifier']}\n(1 row)\n")
        elif alter and alter.group(1) == "postgres":
            literal = alter.group(2).replace("''", "'")
            # PostgreSQL stores a SCRAM verifier as given, and hashes anything else itself.
            app["verifier"] = literal if literal.startswith("SCRAM-SHA-256$") else scram_verifier(literal)
            app.setdefault("statements", []).append(line)  # what pg_stat_statements would record
            out("ALTER ROLE")
        elif create and create.group(1) == create.group(2):
            if create.group(1) not in app["databases"]:
                app["databases"].append(create.group(1))
                out("CREATE DATABASE")
        elif line:
            sys.stderr.write(f"ERROR:  this fake psql does not understand: {line[:40]}\n")
            if stop_on_error:
                raise SystemExit(3)


COMMANDS: dict[tuple[str, ...], Command] = {
    ("postgres", "create"): Command(
        [REGION, ORG, DETACH, *VM_SIZE_FLAGS, B("enable-backups"), S("name", "n"), B("generate-name"),
         S("password", "p"), I("initial-cluster-size"), I("volume-size"), S("consul-url"), S("snapshot-id"),
         S("fork-from"), S("image-ref"), B("stolon"), B("flex"), B("autostart")],
        postgres_create),
    ("postgres", "list"): Command([JSON_OUT], postgres_list),
    ("postgres", "restart"): Command([APP, CONFIG, B("force"), B("skip-health-checks")], postgres_restart),
    ("postgres", "backup", "enable"): Command([APP, CONFIG], postgres_backup_enable),
    ("postgres", "backup", "config", "show"): Command([APP, CONFIG], postgres_backup_config_show),
    ("postgres", "backup", "config", "update"): Command(
        [APP, CONFIG, S("archive-timeout"), S("recovery-window"), S("full-backup-frequency"),
         S("minimum-redundancy")],
        postgres_backup_config_update),
    # internal/command/postgres/backup.go newBackupCreate / newBackupList / newBackupRestore
    ("postgres", "backup", "create"): Command([APP, CONFIG, S("name", "n"), B("immediate-checkpoint", "i")],
                                              postgres_backup_create),
    ("postgres", "backup", "list"): Command([APP, CONFIG], postgres_backup_list),
    ("postgres", "backup", "restore"): Command(
        [APP, CONFIG, DETACH, S("restore-target-time"), S("restore-target-name"), B("restore-target-inclusive"),
         S("image-ref")],
        postgres_backup_restore, args=(1, 1)),
    ("apps", "list"): Command([JSON_OUT, ORG, B("quiet", "q")], apps_list),
    ("apps", "destroy"): Command([YES], apps_destroy, args=(0, 99)),
    ("orgs", "list"): Command([JSON_OUT], orgs_list),
    ("storage", "destroy"): Command([APP, CONFIG, YES], storage_destroy, args=(0, 1)),
    ("machine", "list"): Command([APP, CONFIG, JSON_OUT, B("quiet", "q")], machine_list),
    # update's sharedFlags (internal/command/machine/run.go) are many; the ones listed exist there.
    ("machine", "update"): Command(
        [APP, CONFIG, DETACH, *VM_SIZE_FLAGS, YES, B("select"), B("skip-start"), B("skip-health-checks"),
         I("wait-timeout"), S("image", "i"), S("command", "C")],
        machine_update, args=(0, 1)),
    ("machine", "clone"): Command(
        [APP, CONFIG, B("select"), REGION, S("name"), S("from-snapshot"), S("attach-volume"), S("override-cmd"),
         B("clear-cmd"), B("clear-auto-destroy"), B("volume-requires-unique-zone"), DETACH, *VM_SIZE_FLAGS],
        machine_clone, args=(0, 1)),
    ("machine", "destroy"): Command([APP, CONFIG, B("select"), B("force", "f"), S("image", "i")], machine_destroy,
                                    args=(0, 99)),
    ("volumes", "list"): Command([APP, CONFIG, B("all"), JSON_OUT], volumes_list),
    ("volumes", "extend"): Command([APP, CONFIG, S("size", "s"), YES, JSON_OUT], volumes_extend, args=(0, 1)),
    ("volumes", "update"): Command([APP, CONFIG, I("snapshot-retention"), B("scheduled-snapshots"), JSON_OUT],
                                   volumes_update, args=(1, 1)),
    ("volumes", "destroy"): Command([YES, APP, CONFIG], volumes_destroy, args=(0, 99)),
    ("secrets", "list"): Command([APP, CONFIG, JSON_OUT], secrets_list),
    ("secrets", "set"): Command([APP, CONFIG, DETACH, B("stage"), B("dns-checks")], secrets_set, args=(1, 99)),
    ("secrets", "import"): Command([APP, CONFIG, DETACH, B("stage"), B("dns-checks")], secrets_import,
                                   reads_stdin=True),
    ("secrets", "deploy"): Command([APP, CONFIG, DETACH, B("dns-checks")], secrets_deploy),
    # unset.go: the same sharedFlags as set and import (secrets.go), cobra.MinimumNArgs(1)
    ("secrets", "unset"): Command([APP, CONFIG, DETACH, B("stage"), B("dns-checks")], secrets_unset, args=(1, 99)),
    ("ssh", "console"): Command(
        [ORG, APP, CONFIG, S("command", "C"), S("machine"), B("select", "s"), REGION, B("quiet", "q"),
         S("address", "A"), S("container"), B("no-container"), B("pty"), S("user", "u"),
         S("process-group", "g", "group")],
        ssh_console, args=(0, 1), reads_stdin=True),
}
# cobra's Aliases, per command as flyctl declares them: a word is an alias only under its own parent (`machine rm`
# exists, `machine delete` does not; `volumes delete` exists, `volumes remove` does not).
ALIASES: dict[tuple[str, ...], dict[str, str]] = {
    (): {"pg": "postgres", "machines": "machine", "m": "machine", "app": "apps", "volume": "volumes",
         "vol": "volumes", "v": "volumes", "tigris": "storage"},
    ("postgres",): {"ls": "list", "backups": "backup"},
    ("apps",): {"ls": "list", "delete": "destroy", "remove": "destroy", "rm": "destroy"},
    ("machine",): {"ls": "list", "remove": "destroy", "rm": "destroy"},
    ("volumes",): {"ls": "list", "delete": "destroy", "rm": "destroy"},
    ("secrets",): {"ls": "list"},
    ("orgs",): {"ls": "list"},
    ("storage",): {"ls": "list"},
}


def resolve(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    words: list[str] = []
    rest = list(argv)
    while rest and not rest[0].startswith("-"):
        word = ALIASES.get(tuple(words), {}).get(rest[0], rest[0])
        candidate = (*words, word)
        if not any(path[: len(candidate)] == candidate for path in COMMANDS):
            break
        words.append(word)
        rest.pop(0)
    path = tuple(words)
    if path not in COMMANDS:
        raise FlyError(f"unknown command {' '.join(argv[:len(words) + 1])!r} for \"fly\"")
    return path, rest


def main(argv: list[str]) -> int:
    if not os.path.isdir(STATE_DIR):
        sys.stderr.write("fake fly: FAKE_FLY_STATE must name a directory\n")
        return 2
    token = os.environ.get("FLY_ACCESS_TOKEN") or os.environ.get("FLY_API_TOKEN") or ""
    # Which of the scripts' variables this process inherited (names only): the admin password must reach no child.
    entry: dict[str, Any] = {"argv": argv, "token": token,
                             "env": sorted(name for name in os.environ if name.startswith("GAIA_FLY_"))}
    state: dict[str, Any] | None = None
    try:
        path, rest = resolve(argv)
        spec = COMMANDS[path]
        values, specified, args = parse_flags(rest, spec.flags)
        if spec.reads_stdin:
            entry["stdin"] = sys.stdin.read()
        low, high = spec.args
        if not low <= len(args) <= high:
            raise FlyError(f"accepts between {low} and {high} arg(s), received {len(args)}")
        if not token and not values.get("access-token"):
            raise FlyError("No access token available. Please login with 'flyctl auth login'")
        state = load()
        inv = Invocation(path, values, specified, args, entry.get("stdin"), state)
        spec.handler(inv)
        entry["exit"] = 0
        return 0
    except FlyError as error:
        sys.stderr.write(f"Error: {error}\n")
        entry["exit"] = 1
        return 1
    except SystemExit as exit_:
        entry["exit"] = exit_.code
        return int(exit_.code or 0)
    finally:
        if state is not None:  # flyctl rolls nothing back: what a command did before it failed stays done
            save(state)
        with open(path_of("calls.jsonl"), "a") as log:
            log.write(json.dumps(entry) + "\n")
