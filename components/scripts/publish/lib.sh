# Shared by the publish scripts (fly.sh, fly-delete.sh, github.sh, github-delete.sh), which are appended to this file
# (after common.sh: strict mode, say, die, require_env).
# Inputs arrive as environment variables set by components/publish.py. The values (URLs with passwords) arrive in
# GAIA_PUBLISH_VALUES as NAME=VALUE lines; they are taken out of the environment at once, so no child process inherits
# them, and reach the CLI on its stdin only - never an argument, never a log line.
# Converging: the last successful run printed `published <digest>` (pulumi-command hands it back in
# PULUMI_COMMAND_STDOUT); when the target still holds every name and the digest is the same, nothing is written.
ROOM=publish

# Reads GAIA_PUBLISH_VALUES into VALUES (and NAMES, in order), then drops it from the environment.
take_values() {
    local line
    VALUES=${GAIA_PUBLISH_VALUES:-}
    unset GAIA_PUBLISH_VALUES
    NAMES=()
    while IFS= read -r line; do
        [[ -n $line ]] || continue
        [[ $line == *=* ]] || die "a published value is not a NAME=VALUE line; this is a bug in components/publish.py."
        NAMES+=("${line%%=*}")
    done <<<"$VALUES"
    ((${#NAMES[@]} > 0)) || die "GAIA_PUBLISH_VALUES holds no NAME=VALUE line; run this script through pulumi up."
}

# The digest of what this run would publish where: the target and the values (sha256; printed only to stdout, which
# the program keeps secret).
publish_digest() {
    printf '%s\n%s' "$1" "$VALUES" | python3 -I -S -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

# True when the last run published exactly this (its stdout is handed back by pulumi-command).
# (pulumi-command trims the trailing newline; either way matches).
already_published() {
    local previous=${PULUMI_COMMAND_STDOUT:-}
    [[ ${previous%$'\n'} == "published $1" ]]
}

# True when every name in NAMES is among the names on stdin (one per line).
has_all_names() {
    local present name
    present=$(cat)
    for name in "${NAMES[@]}"; do
        grep -qxF -- "$name" <<<"$present" || return 1
    done
}

# The start of the Fly scripts (fly.sh, fly-delete.sh): flyctl on PATH, the stack's token and app, the values taken.
fly_start() {
    command -v fly >/dev/null 2>&1 ||
        die "fly (flyctl) is not installed; install it (https://fly.io/docs/flyctl/install/) and make sure fly is on PATH."
    require_env FLY_API_TOKEN GAIA_PUBLISH_APP
    # flyctl prefers FLY_ACCESS_TOKEN over FLY_API_TOKEN (internal/config/config.go): a token in the caller's shell
    # must not override the stack's.
    unset FLY_ACCESS_TOKEN
    APP=$GAIA_PUBLISH_APP
    take_values
}

# The names of $APP's secrets, one per line.
fly_secret_names() {
    fly secrets list --app "$APP" --json | python3 -I -S -c 'import json,sys; print("\n".join(s["name"] for s in json.load(sys.stdin)))'
}

# gh authenticates with GH_TOKEN, then GITHUB_TOKEN (cli/cli pkg/cmd/root/help_topic.go); only the token named for
# publishing is handed to it, and a workflow's own GITHUB_TOKEN is refused up front.
github_token() {
    local token=${GAIA_DB_GITHUB_TOKEN:-}
    [[ -n $token ]] ||
        die "GAIA_DB_GITHUB_TOKEN is not set; export a fine-grained personal access token (Secrets: write, Environments: read on the repository) or a GitHub App installation token before pulumi up. A workflow's GITHUB_TOKEN cannot write secrets."
    if [[ ${GITHUB_ACTIONS:-} == true && $token == "${GITHUB_TOKEN:-}" ]]; then
        die "GAIA_DB_GITHUB_TOKEN is this workflow's GITHUB_TOKEN, which cannot write secrets (its permissions have no secrets scope); pass a fine-grained personal access token or a GitHub App installation token in its place."
    fi
    unset GAIA_DB_GITHUB_TOKEN GITHUB_TOKEN
    export GH_TOKEN=$token
    # No prompt may wait for a terminal, and gh's update check stays off.
    export GH_PROMPT_DISABLED=1 GH_NO_UPDATE_NOTIFIER=1
}
