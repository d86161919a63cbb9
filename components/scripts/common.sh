# First in every Fly and publish script (components/scripts load() joins it in front of the room's lib.sh): strict
# mode, and progress and one-sentence errors on stderr, prefixed with the room that speaks (ROOM, set by its lib.sh).
set -euo pipefail
# Command substitutions keep -e (bash >= 4.4; macOS's /bin/bash 3.2 lacks the option and still works).
shopt -s inherit_errexit 2>/dev/null || true

say() { printf 'gaia-db %s: %s\n' "$ROOM" "$*" >&2; }
die() {
    printf 'gaia-db %s: error: %s\n' "$ROOM" "$*" >&2
    exit 1
}

require_env() {
    local name
    for name in "$@"; do
        [[ -n "${!name:-}" ]] || die "$name is not set; the Pulumi program passes it to this script, so run it through pulumi up."
    done
}
