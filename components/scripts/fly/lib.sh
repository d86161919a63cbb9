# Shared by the Fly scripts (create.sh, update.sh, delete.sh, set-password.sh), which are appended to this file.
# Inputs arrive as environment variables set by components/fly.py; secrets (FLY_API_TOKEN, GAIA_FLY_ADMIN_PASSWORD)
# never appear on any command line: flyctl reads the token from its environment, the password goes through stdin.
# Our stdout carries one JSON summary only; progress and flyctl's own output go to stderr.
set -euo pipefail
# Command substitutions keep -e (bash >= 4.4; macOS's /bin/bash 3.2 lacks the option and still works).
shopt -s inherit_errexit 2>/dev/null || true

say() { printf 'gaia-db fly: %s\n' "$*" >&2; }
die() {
    printf 'gaia-db fly: error: %s\n' "$*" >&2
    exit 1
}

require_env() {
    local name
    for name in "$@"; do
        [[ -n "${!name:-}" ]] || die "$name is not set; the Pulumi program passes it to this script, so run it through pulumi up."
    done
}

fly_setup() {
    command -v fly >/dev/null 2>&1 ||
        die "fly (flyctl) is not installed; install it (https://fly.io/docs/flyctl/install/) and make sure fly is on PATH."
    command -v python3 >/dev/null 2>&1 ||
        die "python3 is not installed; these scripts use it to read flyctl's --json output."
    require_env FLY_API_TOKEN GAIA_FLY_APP
    # flyctl prefers FLY_ACCESS_TOKEN over FLY_API_TOKEN (internal/config/config.go, env.First), so a token left in
    # the caller's shell must not override this stack's token.
    unset FLY_ACCESS_TOKEN
    # FLY_JSON=1 would turn every command's output into JSON, including the ones we only show to the user.
    unset FLY_JSON
    APP=$GAIA_FLY_APP
}

# Reads flyctl's JSON from stdin and prints what the scripts need as plain lines (python3, not jq: python3 is
# already required by the Pulumi program).
read -r -d '' FLY_QUERY_PY <<'PY' || true
import json, sys

what, args = sys.argv[1], sys.argv[2:]
data = json.load(sys.stdin)


def role(machine):
    # flyctl's own rule (internal/command/postgres/postgres.go machineRole): the "role" check's output when passing.
    for check in machine.get("checks") or []:
        if check.get("name") == "role":
            return check.get("output", "unknown") if check.get("status") == "passing" else "error"
    return "unknown"


def volume(machine):
    mounts = (machine.get("config") or {}).get("mounts") or []
    return mounts[0].get("volume", "-") if mounts else "-"


if what == "cluster":  # postgres list --json -> "absent" | "present <app id>" | "elsewhere <org slug>"
    name, org = args
    for app in data:
        if app.get("Name") == name:
            slug = (app.get("Organization") or {}).get("Slug", "")
            print(f"present {app.get('ID', '')}" if slug == org else f"elsewhere {slug or 'unknown'}")
            break
    else:
        print("absent")
elif what == "app-names":  # apps list --json
    for app in data:
        print(app.get("Name", ""))
elif what == "machines":  # machine list --json -> "id role cpu_kind cpus memory_mb volume", primary last
    rows = []
    for m in data:
        guest = (m.get("config") or {}).get("guest") or {}
        rows.append((role(m) == "primary", m["id"], role(m), guest.get("cpu_kind", "-"), guest.get("cpus", 0),
                     guest.get("memory_mb", 0), volume(m)))
    for row in sorted(rows):
        print(*row[1:])
elif what == "volumes":  # volumes list --json -> "id size_gb snapshot_retention auto_backup_enabled attached_machine"
    for v in data:
        print(v["id"], v.get("size_gb", 0), v.get("snapshot_retention", 0),
              str(bool(v.get("auto_backup_enabled"))).lower(), v.get("attached_machine_id") or "-")
elif what == "secrets":  # secrets list --json -> "name status"
    for s in data:
        print(s["name"], s.get("status", "-"))
elif what == "summary":  # machine list --json -> the JSON the Pulumi program reads
    app_id, = args
    primary = [m["id"] for m in data if role(m) == "primary"]
    replicas = sorted(m["id"] for m in data if role(m) == "replica")
    print(json.dumps({"appId": app_id, "primary": primary[0] if primary else None, "replicas": replicas}))
else:
    sys.exit(f"unknown query {what}")
PY

fly_query() { python3 -c "$FLY_QUERY_PY" "$@"; }

# "absent", "present <app id>" or "elsewhere <org>" for $APP among the Postgres clusters the token can see.
cluster_state() {
    local out
    out=$(fly postgres list --json)
    # With no clusters at all flyctl prints a sentence instead of [] (internal/command/postgres/list.go).
    if [[ $out != \[* ]]; then
        echo absent
        return
    fi
    fly_query cluster "$APP" "${GAIA_FLY_ORG:-}" <<<"$out"
}

machine_rows() {
    local out
    out=$(fly machine list --app "$APP" --json)
    fly_query machines <<<"$out"
}

volume_rows() {
    local out
    out=$(fly volumes list --app "$APP" --json)
    fly_query volumes <<<"$out"
}

# Creates the cluster unless it exists, then brings it to the declared size; prints the summary JSON.
ensure_cluster() {
    require_env GAIA_FLY_ORG GAIA_FLY_REGION GAIA_FLY_VM_SIZE GAIA_FLY_VM_CPU_KIND GAIA_FLY_VM_CPUS \
        GAIA_FLY_VM_MEMORY_MB GAIA_FLY_VOLUME_GB GAIA_FLY_CLUSTER_SIZE GAIA_FLY_WAL_BACKUPS \
        GAIA_FLY_SNAPSHOT_RETENTION_DAYS
    if [[ $GAIA_FLY_WAL_BACKUPS == true ]]; then
        require_env GAIA_FLY_RECOVERY_WINDOW
        # flyctl refuses backups below 512 MB (flypg/launcher.go, internal/command/postgres/postgres.go).
        ((GAIA_FLY_VM_MEMORY_MB >= 512)) ||
            die "WAL backups need at least 512 MB of memory, but the VM has $GAIA_FLY_VM_MEMORY_MB MB; raise size.memoryMb."
    fi

    local state
    state=$(cluster_state)
    case $state in
        present*)
            say "$APP already exists in $GAIA_FLY_ORG; not creating it again, checking its size and backups"
            ;;
        elsewhere*)
            die "$APP already exists in the Fly organization ${state#elsewhere }, not in $GAIA_FLY_ORG; move or destroy it first, or change fly.org."
            ;;
        absent)
            create_cluster
            state=$(cluster_state)
            [[ $state == present* ]] || die "fly postgres create finished but $APP is not listed by fly postgres list."
            ;;
    esac
    converge "${state#present }"
}

create_cluster() {
    local names
    names=$(fly apps list --json)
    if fly_query app-names <<<"$names" | grep -qxF -- "$APP"; then
        die "a Fly app named $APP exists but is not a Postgres cluster; destroy it or pick another environment."
    fi
    local args=(
        postgres create
        --name "$APP"
        --org "$GAIA_FLY_ORG"
        --region "$GAIA_FLY_REGION"
        # --vm-memory always: with --vm-size alone flyctl takes the memory from its own table
        # (internal/command/postgres/create.go MachineVMSizes: shared-cpu-2x means 4 GB); with --vm-memory it uses the
        # machine preset plus our memory (internal/flag/machines.go GetMachineGuest).
        --vm-size "$GAIA_FLY_VM_SIZE"
        --vm-memory "$GAIA_FLY_VM_MEMORY_MB"
        --volume-size "$GAIA_FLY_VOLUME_GB"
        --initial-cluster-size "$GAIA_FLY_CLUSTER_SIZE"
    )
    # Creates the Tigris bucket and the S3_ARCHIVE_CONFIG secret before the first boot, so no restart is needed.
    if [[ $GAIA_FLY_WAL_BACKUPS == true ]]; then
        args+=(--enable-backups)
    fi
    say "creating $APP in $GAIA_FLY_ORG/$GAIA_FLY_REGION: $GAIA_FLY_CLUSTER_SIZE x $GAIA_FLY_VM_SIZE," \
        "$GAIA_FLY_VM_MEMORY_MB MB, $GAIA_FLY_VOLUME_GB GB volumes (this waits for the health checks)"
    # stdout is discarded: flyctl prints the generated postgres password there (flypg/launcher.go); ours is set
    # afterwards by set-password.sh.
    fly "${args[@]}" >/dev/null
}

converge() {
    local app_id=$1 machines primary
    machines=$(machine_rows)
    primary=$(awk '$2 == "primary" { print $1 }' <<<"$machines")
    [[ -n $primary ]] ||
        die "no machine of $APP reports the primary role; check fly status --app $APP and run again once it is healthy."

    # Fly volumes never shrink: refuse before changing anything.
    local volumes id size retention auto attached
    volumes=$(volume_rows)
    while read -r id size retention auto attached; do
        [[ -n $id ]] || continue
        ((size <= GAIA_FLY_VOLUME_GB)) ||
            die "volume $id of $APP is $size GB, more than size.storageGb $GAIA_FLY_VOLUME_GB; Fly volumes cannot shrink, so set size.storageGb to at least $size."
    done <<<"$volumes"

    # 1. VM size, replicas first and the primary last (machine_rows sorts it last), so at most one failover.
    local role kind cpus memory vol
    while read -r id role kind cpus memory vol; do
        [[ -n $id ]] || continue
        if [[ $kind != "$GAIA_FLY_VM_CPU_KIND" || $cpus != "$GAIA_FLY_VM_CPUS" || $memory != "$GAIA_FLY_VM_MEMORY_MB" ]]; then
            say "resizing $role $id from $cpus $kind CPU / $memory MB to $GAIA_FLY_VM_SIZE / $GAIA_FLY_VM_MEMORY_MB MB"
            fly machine update "$id" --app "$APP" --vm-size "$GAIA_FLY_VM_SIZE" \
                --vm-memory "$GAIA_FLY_VM_MEMORY_MB" --yes >&2
        fi
    done <<<"$machines"

    # 2. Cluster size: Fly's documented way to add a standby is cloning a member; clones copy the (already resized)
    # guest. Removing one destroys a standby (flyctl unregisters it from repmgr first) and then its volume.
    local count membership_changed=false
    count=$(grep -c . <<<"$machines")
    while ((count < GAIA_FLY_CLUSTER_SIZE)); do
        say "adding a replica to $APP ($count of $GAIA_FLY_CLUSTER_SIZE machines)"
        fly machine clone "$primary" --app "$APP" --region "$GAIA_FLY_REGION" >&2
        count=$((count + 1))
        membership_changed=true
    done
    if ((count > GAIA_FLY_CLUSTER_SIZE)); then
        while read -r id role kind cpus memory vol; do
            ((count > GAIA_FLY_CLUSTER_SIZE)) || break
            [[ $role != primary ]] || continue
            say "removing replica $id from $APP ($count machines, $GAIA_FLY_CLUSTER_SIZE wanted)"
            fly machine destroy "$id" --app "$APP" --force >&2
            [[ $vol == - ]] || fly volumes destroy "$vol" --app "$APP" --yes >&2
            count=$((count - 1))
        done <<<"$machines"
        membership_changed=true
    fi
    if [[ $membership_changed == true ]]; then
        volumes=$(volume_rows)
    fi

    # 3. Volumes (re-listed above when machines came or went): extend to the declared size; daily snapshots kept
    # backupRetentionDays.
    while read -r id size retention auto attached; do
        [[ -n $id ]] || continue
        if ((size < GAIA_FLY_VOLUME_GB)); then
            say "extending volume $id from $size GB to $GAIA_FLY_VOLUME_GB GB"
            fly volumes extend "$id" --app "$APP" --size "$GAIA_FLY_VOLUME_GB" --yes >&2
        fi
        if [[ $retention != "$GAIA_FLY_SNAPSHOT_RETENTION_DAYS" || $auto != true ]]; then
            say "daily snapshots of volume $id, kept $GAIA_FLY_SNAPSHOT_RETENTION_DAYS days"
            fly volumes update "$id" --app "$APP" --snapshot-retention "$GAIA_FLY_SNAPSHOT_RETENTION_DAYS" \
                --scheduled-snapshots >&2
        fi
    done <<<"$volumes"

    # 4. WAL archiving (point-in-time recovery) to Tigris.
    if [[ $GAIA_FLY_WAL_BACKUPS == true ]]; then
        local secrets archive
        secrets=$(fly secrets list --app "$APP" --json)
        archive=$(fly_query secrets <<<"$secrets" | awk '$1 == "S3_ARCHIVE_CONFIG" { print $2 }')
        if [[ -z $archive ]]; then
            say "enabling WAL backups on $APP"
            fly postgres backup enable --app "$APP" >&2
        fi
        if [[ -z $archive || $archive == Staged ]]; then
            # backup enable only stores the S3_ARCHIVE_CONFIG secret; the machines need a deploy to use it
            # (internal/command/postgres/backup.go).
            say "restarting $APP with the backup configuration"
            fly secrets deploy --app "$APP" >&2
        fi
        say "WAL backups of $APP keep a recovery window of $GAIA_FLY_RECOVERY_WINDOW"
        fly postgres backup config update --app "$APP" --recovery-window "$GAIA_FLY_RECOVERY_WINDOW" >&2
    fi

    local final
    final=$(fly machine list --app "$APP" --json)
    fly_query summary "$app_id" <<<"$final"
}
