# Shared by the Fly scripts (create.sh, update.sh, delete.sh, set-password.sh), which are appended to this file
# (after common.sh: strict mode, say, die, require_env).
# Inputs arrive as environment variables set by components/fly.py; secrets (FLY_API_TOKEN, GAIA_FLY_ADMIN_PASSWORD)
# never appear on any command line: flyctl reads the token from its environment, the password goes through stdin.
# Our stdout carries one JSON summary only; progress and flyctl's own output go to stderr.
#
# flyctl never rolls back (superfly/flyctl flypg/launcher.go: every failed step is a plain `return err`), so every
# script starts from whatever an earlier, interrupted run left behind and converges from there. Two staged app
# secrets, whose values are never read, tell this stack's clusters apart: GAIA_DB_CLUSTER_ID is written as soon as
# an app exists (its server-side digest is the cluster's identity for the password resource), GAIA_DB_CLUSTER_READY
# once a primary has answered - before that, no release has run, so no volume of the app holds data.
ROOM=fly

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

# Reads flyctl's output (or a password) from stdin and prints what the scripts need as plain lines (python3, not jq:
# python3 is already required by the Pulumi program).
read -r -d '' FLY_QUERY_PY <<'PY' || true
import base64, hashlib, hmac, json, os, re, sys

what, args = sys.argv[1], sys.argv[2:]
text = sys.stdin.read()


def role(machine):
    # flyctl's own rule (internal/command/postgres/postgres.go machineRole): the "role" check's output when passing.
    for check in machine.get("checks") or []:
        if check.get("name") == "role":
            return check.get("output", "unknown") if check.get("status") == "passing" else "error"
    return "unknown"


def volume(machine):
    mounts = (machine.get("config") or {}).get("mounts") or []
    return mounts[0].get("volume", "-") if mounts else "-"


def scram(password, salt, iterations):
    # What PostgreSQL stores for SCRAM-SHA-256 (RFC 5802/7677; src/common/scram-common.c); the scripts accept
    # printable ASCII passwords only, for which SASLprep changes nothing.
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


if what == "cluster":  # postgres list --json -> "absent" | "present" | "elsewhere <org slug>"
    name, org = args
    # With no clusters at all flyctl prints a sentence even with --json (internal/command/postgres/list.go). `ID` is
    # not used: it is the app's name, not an id that changes when the app is made anew (flyctl #5185).
    for app in (json.loads(text) if text.lstrip().startswith("[") else []):
        if app.get("Name") == name:
            slug = (app.get("Organization") or {}).get("Slug", "")
            print("present" if slug == org else f"elsewhere {slug or 'unknown'}")
            break
    else:
        print("absent")
elif what == "app-names":  # apps list --json
    for app in json.loads(text):
        print(app.get("Name", ""))
elif what == "org-slugs":  # orgs list --json: {"<slug>": "<name>"}
    print("\n".join(json.loads(text)))
elif what == "machines":  # machine list --json -> "id role cpu_kind cpus memory_mb volume", primary last
    rows = []
    for m in json.loads(text):
        guest = (m.get("config") or {}).get("guest") or {}
        rows.append((role(m) == "primary", m["id"], role(m), guest.get("cpu_kind", "-"), guest.get("cpus", 0),
                     guest.get("memory_mb", 0), volume(m)))
    for row in sorted(rows):
        print(*row[1:])
elif what == "volumes":  # volumes list --json -> "id size_gb snapshot_retention auto_backup_enabled attached_machine"
    for v in json.loads(text):
        print(v["id"], v.get("size_gb", 0), v.get("snapshot_retention", 0),
              str(bool(v.get("auto_backup_enabled"))).lower(), v.get("attached_machine_id") or "-")
elif what == "secrets":  # secrets list --json -> "name digest" (the status column is not read: see converge)
    for s in json.loads(text):
        print(s["name"], s.get("digest") or "-")
elif what == "window":  # flexctl backup config show -> the RecoveryWindow value, or nothing
    match = re.search(r"^\s*RecoveryWindow = (\S+)\s*$", text, re.M)
    print(match.group(1) if match else "")
elif what == "days":  # a barman window (7d, 2w, 1y: postgres-flex barman_config.go) -> days, 0 when unreadable
    match = re.fullmatch(r"\s*(\d+)([dwy])\s*", text)
    print(int(match.group(1)) * {"d": 1, "w": 7, "y": 365}[match.group(2)] if match else 0)
elif what == "scram":  # a password on stdin -> a SCRAM-SHA-256 verifier with a fresh salt
    print(scram(text, os.urandom(16), 4096))
elif what == "password-matches":  # "password\nverifier" on stdin -> yes | no
    password, _, verifier = text.partition("\n")
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(\S+)\s*", verifier)
    same = bool(match) and scram(password, base64.b64decode(match.group(2)), int(match.group(1))) == verifier.strip()
    print("yes" if same else "no")
elif what == "summary":  # machine list --json -> the JSON the Pulumi program reads
    cluster_id, = args
    data = json.loads(text)
    primary = [m["id"] for m in data if role(m) == "primary"]
    replicas = sorted(m["id"] for m in data if role(m) == "replica")
    print(json.dumps({"clusterId": cluster_id, "primary": primary[0] if primary else None, "replicas": replicas}))
else:
    sys.exit(f"unknown query {what}")
PY

# -I -S: stdlib only, untouched by the caller's PYTHON* variables, user site or .pth files (and quicker to start).
fly_query() { python3 -I -S -c "$FLY_QUERY_PY" "$@"; }

# "absent", "present" or "elsewhere <org>" for $APP among the Postgres clusters the token can see.
cluster_state() {
    local out
    out=$(fly postgres list --json)
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

secret_rows() {
    local out
    out=$(fly secrets list --app "$APP" --json)
    fly_query secrets <<<"$out"
}

# The digest of secret $1 in the `secret_rows` given as $2, or nothing.
secret_digest() { awk -v name="$1" '$1 == name { print $2 }' <<<"$2"; }

# Stages a marker secret (no restart: `--stage`, internal/command/secrets/set.go). Its value is random and public.
stage_marker() {
    local value
    value=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    fly secrets set --stage --app "$APP" "$1=$value" >/dev/null
}

# flyctl's errors that name a situation the user has to resolve (superfly/flyctl, quoted in docs/fly.md).
TOS_ERROR='the --yes flag must be specified when not running interactively'
TAKEN_ERROR='has already been taken'
tos_sentence() {
    printf '%s' "WAL backups keep their archive in a Tigris bucket, and the Fly user behind flyApiToken has not" \
        " accepted Tigris's terms, which flyctl only asks in a terminal (extensions/core/core.go); run" \
        " \`fly storage create --org $GAIA_FLY_ORG\` once in a terminal as that user, answer yes, destroy that" \
        " bucket with \`fly storage destroy <name> --yes\`, and run pulumi up again."
}

# Runs flyctl with its stdout discarded (create and backup enable print passwords and Tigris keys there) and its
# stderr shown as it comes (a create waits minutes for health checks) and kept in $FLY_ERRORS for the caller.
run_quietly() {
    local log status
    log=$(mktemp)
    set +e
    fly "$@" 2>&1 >/dev/null | tee "$log" >&2
    status=${PIPESTATUS[0]}
    set -e
    FLY_ERRORS=$(<"$log")
    rm -f "$log"
    return "$status"
}

# Creates the cluster unless it exists, finishes one that an interrupted create left, then brings it to the
# declared size; prints the summary JSON. `ensure_cluster ours` (the update): an unmarked cluster is this stack's own.
ensure_cluster() {
    local known=${1:-}
    require_env GAIA_FLY_ORG GAIA_FLY_REGION GAIA_FLY_VM_SIZE GAIA_FLY_VM_CPU_KIND GAIA_FLY_VM_CPUS \
        GAIA_FLY_VM_MEMORY_MB GAIA_FLY_VOLUME_GB GAIA_FLY_CLUSTER_SIZE GAIA_FLY_WAL_BACKUPS \
        GAIA_FLY_SNAPSHOT_RETENTION_DAYS GAIA_FLY_EXACT_SIZE GAIA_FLY_EXACT_REPLICAS GAIA_FLY_EXACT_RETENTION \
        GAIA_FLY_ADMIN_PASSWORD_GIVEN
    if [[ $GAIA_FLY_WAL_BACKUPS == true ]]; then
        require_env GAIA_FLY_RECOVERY_WINDOW
        # flyctl refuses backups below 512 MB (flypg/launcher.go, internal/command/postgres/postgres.go).
        ((GAIA_FLY_VM_MEMORY_MB >= 512)) ||
            die "WAL backups need at least 512 MB of memory, but the VM has $GAIA_FLY_VM_MEMORY_MB MB; raise size.memoryMb."
    fi

    local state secrets
    state=$(cluster_state)
    case $state in
        elsewhere*)
            die "$APP already exists in the Fly organization ${state#elsewhere }, not in $GAIA_FLY_ORG; move or destroy it first, or change fly.org."
            ;;
        absent)
            check_before_create
            create_cluster
            # flyctl returned only after every machine passed its health checks (watch.MachinesChecks).
            stage_marker GAIA_DB_CLUSTER_READY
            ;;
        present)
            say "$APP already exists in $GAIA_FLY_ORG; not creating it again, checking its size and backups"
            secrets=$(secret_rows)
            if [[ -z $(secret_digest GAIA_DB_CLUSTER_ID "$secrets") && $known == ours ]]; then
                say "marking $APP, which this stack created before it kept marker secrets"
                stage_marker GAIA_DB_CLUSTER_ID
                stage_marker GAIA_DB_CLUSTER_READY
            elif [[ -z $(secret_digest GAIA_DB_CLUSTER_ID "$secrets") ]]; then
                [[ $GAIA_FLY_ADMIN_PASSWORD_GIVEN == true ]] ||
                    die "$APP exists but was not created by this stack (it has no GAIA_DB_CLUSTER_ID secret); to adopt it, give its current postgres password as secret config (pulumi config set --secret adminPassword, see docs/RUNBOOK.md) and run again."
                say "adopting $APP: it stays as it is except where this stack asks for more (below)"
                stage_marker GAIA_DB_CLUSTER_ID
                # An adopted cluster has served: its volumes hold data, whatever its state.
                stage_marker GAIA_DB_CLUSTER_READY
                # Its backups are kept at least as long as it kept them (converge).
                stage_marker GAIA_DB_CLUSTER_ADOPTED
            fi
            finish_cluster
            ;;
    esac
    converge
}

# What `fly postgres create` would only find out after the app exists.
check_before_create() {
    local orgs names
    orgs=$(fly orgs list --json)
    # `fly postgres create --org` matches the slug only, and a personal organization's slug is "personal", never the
    # raw slug shown elsewhere (internal/prompt/prompt.go Org, fly-go types.go Organization.RawSlug).
    fly_query org-slugs <<<"$orgs" | grep -qxF -- "$GAIA_FLY_ORG" ||
        die "fly.org is $GAIA_FLY_ORG, which is not an organization slug this token can use ($(fly_query org-slugs <<<"$orgs" | paste -sd, -)); for your personal organization use personal."
    names=$(fly apps list --json)
    if fly_query app-names <<<"$names" | grep -qxF -- "$APP"; then
        die "a Fly app named $APP exists but is not a Postgres cluster; destroy it, or set fly.appName to another name."
    fi
}

create_cluster() {
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
    # stdout is discarded: flyctl prints the generated postgres password and the Tigris keys there
    # (flypg/launcher.go, flypg/tigris.go); ours is set afterwards by set-password.sh.
    if run_quietly "${args[@]}"; then
        stage_marker GAIA_DB_CLUSTER_ID
        return
    fi
    local reason
    reason=$(grep '^Error: ' <<<"$FLY_ERRORS" | tail -n 1 || true)
    if [[ $FLY_ERRORS == *"$TAKEN_ERROR"* ]]; then
        # The app is flyctl's first step, so nothing was made.
        die "the Fly app name $APP is already taken by an app this token cannot see (app names are global across Fly.io); set fly.appName to another name and run again."
    fi
    if [[ $FLY_ERRORS == *"$TOS_ERROR"* ]]; then
        # Asked after the app and its Flycast address exist and before any volume (launcher.go): remove them.
        [[ $(cluster_state) != present ]] || destroy_app
        die "$(tos_sentence)"
    fi
    [[ $(cluster_state) != present ]] || stage_marker GAIA_DB_CLUSTER_ID  # ours: the next run finishes it
    die "fly postgres create stopped halfway (${reason:-no error message}); run pulumi up again: it finishes $APP from where flyctl stopped, or creates it again while no machine of it has served."
}

# Destroys the app with its machines and volumes, and the Tigris bucket of its WAL archive, which `fly apps destroy`
# leaves behind (internal/command/apps/destroy.go deletes statics buckets only).
destroy_app() {
    local secrets
    secrets=$(secret_rows)
    if [[ -n $(secret_digest BUCKET_NAME "$secrets") ]]; then
        say "destroying the Tigris bucket that holds $APP's WAL archive"
        fly storage destroy --app "$APP" --yes >&2
    fi
    say "destroying $APP with its machines and volumes"
    fly apps destroy "$APP" --yes >&2
}

# Waits up to GAIA_FLY_HEALTH_WAIT_SECONDS (default: flyctl's own 300 s health-check wait) for a primary; prints it.
wait_for_primary() {
    local limit=${GAIA_FLY_HEALTH_WAIT_SECONDS:-300} step=${GAIA_FLY_POLL_SECONDS:-10} primary started=$SECONDS
    while :; do
        primary=$(machine_rows | awk '$2 == "primary" { print $1 }')
        if [[ -n $primary ]] || ((SECONDS - started >= limit)); then
            printf '%s' "$primary"
            return
        fi
        say "waiting for a machine of $APP to report the primary role ($((SECONDS - started))s of ${limit}s)"
        sleep "$step"
    done
}

# A cluster an interrupted create left: finish it when a primary comes up, or make it again when nothing of it has
# ever served; a cluster that has served is never destroyed here.
finish_cluster() {
    local secrets machines primary
    secrets=$(secret_rows)
    [[ -z $(secret_digest GAIA_DB_CLUSTER_READY "$secrets") ]] || return 0
    machines=$(machine_rows)
    if [[ -z $machines ]]; then
        say "$APP has no machine: a create stopped before its first one ran, so nothing in it holds data; destroying it and creating it again"
        destroy_app
        create_cluster
    else
        primary=$(wait_for_primary)
        if [[ -z $primary ]]; then
            # The wait above is flyctl's own health-check wait again; a cluster still without a primary is remade.
            say "no machine of $APP became primary; it has never served, so nothing in it holds data; destroying it and creating it again"
            destroy_app
            create_cluster
        else
            say "finishing $APP: its primary $primary is up"
        fi
    fi
    stage_marker GAIA_DB_CLUSTER_READY
}

# Growth is always applied; whatever would shrink the cluster (a smaller VM, fewer standbys) only when the stack
# sets that value itself (size, readReplicas) rather than taking the tier's: an adopted cluster is never cut down to a
# tier nobody asked for. Likewise an adopted cluster's backups are kept longer than the tier's unless
# backupRetentionDays is set. Fly volumes cannot shrink at all.
converge() {
    local machines primary secrets adopted=false
    secrets=$(secret_rows)
    [[ -z $(secret_digest GAIA_DB_CLUSTER_ADOPTED "$secrets") || $GAIA_FLY_EXACT_RETENTION == true ]] || adopted=true
    primary=$(wait_for_primary)
    [[ -n $primary ]] ||
        die "no machine of $APP reports the primary role; check fly status --app $APP and run again once it is healthy (nothing was changed)."
    machines=$(machine_rows)

    # 1. VM size, replicas first and the primary last (machine_rows sorts it last), so at most one failover.
    local id role kind cpus memory vol
    while read -r id role kind cpus memory vol; do
        [[ -n $id ]] || continue
        [[ $kind != "$GAIA_FLY_VM_CPU_KIND" || $cpus != "$GAIA_FLY_VM_CPUS" || $memory != "$GAIA_FLY_VM_MEMORY_MB" ]] ||
            continue
        if [[ $GAIA_FLY_EXACT_SIZE != true ]] && ((cpus > GAIA_FLY_VM_CPUS || memory > GAIA_FLY_VM_MEMORY_MB)); then
            say "keeping $role $id at $cpus $kind CPU / $memory MB, more than the tier's $GAIA_FLY_VM_SIZE / $GAIA_FLY_VM_MEMORY_MB MB; set size to change it"
            continue
        fi
        say "resizing $role $id from $cpus $kind CPU / $memory MB to $GAIA_FLY_VM_SIZE / $GAIA_FLY_VM_MEMORY_MB MB"
        fly machine update "$id" --app "$APP" --vm-size "$GAIA_FLY_VM_SIZE" \
            --vm-memory "$GAIA_FLY_VM_MEMORY_MB" --yes >&2
    done <<<"$machines"

    # 2. Cluster size: Fly's documented way to add a standby is cloning a member; clones copy the (already resized)
    # guest. Removing one destroys a standby (flyctl unregisters it from repmgr first) and then its volume.
    local count
    count=$(grep -c . <<<"$machines")
    while ((count < GAIA_FLY_CLUSTER_SIZE)); do
        say "adding a replica to $APP ($count of $GAIA_FLY_CLUSTER_SIZE machines)"
        fly machine clone "$primary" --app "$APP" --region "$GAIA_FLY_REGION" >&2
        count=$((count + 1))
    done
    if ((count > GAIA_FLY_CLUSTER_SIZE)) && [[ $GAIA_FLY_EXACT_REPLICAS != true ]]; then
        say "keeping all $count machines of $APP, more than the tier's $GAIA_FLY_CLUSTER_SIZE; set readReplicas to $((GAIA_FLY_CLUSTER_SIZE - 1)) to remove standbys"
    fi
    if ((count > GAIA_FLY_CLUSTER_SIZE)) && [[ $GAIA_FLY_EXACT_REPLICAS == true ]]; then
        while read -r id role kind cpus memory vol; do
            ((count > GAIA_FLY_CLUSTER_SIZE)) || break
            [[ $role != primary ]] || continue
            say "removing replica $id from $APP ($count machines, $GAIA_FLY_CLUSTER_SIZE wanted by readReplicas)"
            fly machine destroy "$id" --app "$APP" --force >&2
            [[ $vol == - ]] || fly volumes destroy "$vol" --app "$APP" --yes >&2
            count=$((count - 1))
        done <<<"$machines"
    fi

    # 3. Volumes (listed after machines came or went): extend to the declared size; daily snapshots kept
    # backupRetentionDays. A volume no machine mounts is reported, never touched.
    local volumes size retention auto attached
    volumes=$(volume_rows)
    while read -r id size retention auto attached; do
        [[ -n $id ]] || continue
        if [[ $attached == - ]]; then
            say "volume $id of $APP is attached to no machine (an interrupted create or a removed machine left it); it is kept: destroy it with fly volumes destroy $id --app $APP --yes once you know it holds nothing you need"
            continue
        fi
        if ((size > GAIA_FLY_VOLUME_GB)); then
            say "volume $id of $APP is $size GB, more than size.storageGb $GAIA_FLY_VOLUME_GB; Fly volumes cannot shrink, so it keeps $size GB"
        elif ((size < GAIA_FLY_VOLUME_GB)); then
            say "extending volume $id from $size GB to $GAIA_FLY_VOLUME_GB GB"
            fly volumes extend "$id" --app "$APP" --size "$GAIA_FLY_VOLUME_GB" --yes >&2
        fi
        if [[ $adopted == true ]] && ((retention > GAIA_FLY_SNAPSHOT_RETENTION_DAYS)); then
            say "keeping volume $id's snapshots $retention days, longer than the tier's $GAIA_FLY_SNAPSHOT_RETENTION_DAYS; set backupRetentionDays to change it"
        elif [[ $retention != "$GAIA_FLY_SNAPSHOT_RETENTION_DAYS" || $auto != true ]]; then
            say "daily snapshots of volume $id, kept $GAIA_FLY_SNAPSHOT_RETENTION_DAYS days"
            fly volumes update "$id" --app "$APP" --snapshot-retention "$GAIA_FLY_SNAPSHOT_RETENTION_DAYS" \
                --scheduled-snapshots >&2
        fi
    done <<<"$volumes"

    # 4. WAL archiving (point-in-time recovery) to Tigris.
    [[ $GAIA_FLY_WAL_BACKUPS != true ]] || converge_wal_backups "$adopted"

    local final
    final=$(fly machine list --app "$APP" --json)
    secrets=$(secret_rows)
    fly_query summary "$(secret_digest GAIA_DB_CLUSTER_ID "$secrets")" <<<"$final"
}

converge_wal_backups() {
    local adopted=$1 secrets shown current deploy=false
    secrets=$(secret_rows)
    if [[ -z $(secret_digest S3_ARCHIVE_CONFIG "$secrets") ]]; then
        say "enabling WAL backups on $APP"
        run_quietly postgres backup enable --app "$APP" ||
            if [[ $FLY_ERRORS == *"$TOS_ERROR"* ]]; then die "$(tos_sentence)"; else exit 1; fi
        deploy=true
    else
        # Every secret of a `fly pg create` app lists as "Staged" (its machines carry no fly_release_version:
        # internal/command/secrets/list.go), so the status says nothing. The leader's flexctl says whether the
        # archive configuration is in the machines' environment (postgres-flex cmd/flexctl/backups.go backupsEnabled).
        shown=$(fly postgres backup config show --app "$APP" 2>&1)
        [[ $shown != *"backups are not enabled"* ]] || deploy=true
    fi
    if [[ $deploy == true ]]; then
        # backup enable only stores the S3_ARCHIVE_CONFIG secret; the machines need a deploy to use it
        # (internal/command/postgres/backup.go).
        say "restarting $APP with the backup configuration"
        fly secrets deploy --app "$APP" >&2
    fi
    shown=$(fly postgres backup config show --app "$APP" 2>&1)
    current=$(fly_query window <<<"$shown")
    [[ $current != "$GAIA_FLY_RECOVERY_WINDOW" ]] || return 0
    if [[ $adopted == true ]] && (($(fly_query days <<<"$current") > $(fly_query days <<<"$GAIA_FLY_RECOVERY_WINDOW"))); then
        say "keeping $APP's WAL recovery window of $current, longer than the tier's $GAIA_FLY_RECOVERY_WINDOW; set backupRetentionDays to change it"
        return 0
    fi

    say "WAL backups of $APP keep a recovery window of $GAIA_FLY_RECOVERY_WINDOW"
    local answer
    # flyctl exits 0 whatever flexctl answers (postgres.go ExecOnMachine ignores the exit code), and flexctl prints
    # its errors on stdout: success is the "Updated" line.
    answer=$(fly postgres backup config update --app "$APP" --recovery-window "$GAIA_FLY_RECOVERY_WINDOW" 2>&1)
    printf '%s\n' "$answer" >&2
    grep -qx 'Updated' <<<"$answer" ||
        die "fly postgres backup config update did not set the recovery window $GAIA_FLY_RECOVERY_WINDOW on $APP: $(head -n 1 <<<"$answer")"
    if [[ $answer == *"restart is required"* ]]; then
        # postgres-flex answers every barman update with restart_required (internal/api/handle_admin.go);
        # `fly postgres restart` restarts the standbys first, then the leader (internal/command/postgres/restart.go).
        say "restarting $APP, standbys first, so barman keeps the new window"
        fly postgres restart --app "$APP" >&2
    fi
}
