# delete of a <service>-fly publish resource: the secrets it set leave the app (`fly secrets unset`,
# internal/command/secrets/unset.go); an app that is gone already has nothing to remove.
command -v fly >/dev/null 2>&1 ||
    die "fly (flyctl) is not installed; install it (https://fly.io/docs/flyctl/install/) and make sure fly is on PATH."
require_env FLY_API_TOKEN GAIA_PUBLISH_APP
unset FLY_ACCESS_TOKEN
APP=$GAIA_PUBLISH_APP
take_values
if ! names=$(fly secrets list --app "$APP" --json 2>/dev/null | python3 -I -S -c 'import json,sys; print("\n".join(s["name"] for s in json.load(sys.stdin)))'); then
    say "$APP cannot be listed (destroyed already?); nothing to remove"
    exit 0
fi
present=()
for name in "${NAMES[@]}"; do
    ! grep -qxF -- "$name" <<<"$names" || present+=("$name")
done
if ((${#present[@]} == 0)); then
    say "$APP holds none of ${NAMES[*]}; nothing to remove"
    exit 0
fi
say "removing ${present[*]} from $APP"
fly secrets unset "${present[@]}" --app "$APP" >&2
