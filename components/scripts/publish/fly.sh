# create/update of a <service>-fly publish resource: the service's DATABASE_URL (and DATABASE_READER_URLS) become
# secrets of its Fly app through `fly secrets import`, which reads NAME=VALUE lines on stdin
# (superfly/flyctl internal/command/secrets/import.go) and deploys them to the app's machines.
command -v fly >/dev/null 2>&1 ||
    die "fly (flyctl) is not installed; install it (https://fly.io/docs/flyctl/install/) and make sure fly is on PATH."
require_env FLY_API_TOKEN GAIA_PUBLISH_APP
# flyctl prefers FLY_ACCESS_TOKEN over FLY_API_TOKEN (internal/config/config.go): a token in the caller's shell must
# not override the stack's.
unset FLY_ACCESS_TOKEN
APP=$GAIA_PUBLISH_APP
take_values
digest=$(publish_digest "fly:$APP")
names=$(fly secrets list --app "$APP" --json | python3 -I -S -c 'import json,sys; print("\n".join(s["name"] for s in json.load(sys.stdin)))') ||
    die "fly secrets list --app $APP failed (see above); check that the app exists and the token may manage it."
if already_published "$digest" && has_all_names <<<"$names"; then
    say "$APP already has its ${NAMES[*]}; nothing to change (no new release)"
    printf 'published %s\n' "$digest"
    exit 0
fi
# flyctl's parser (internal/command/secrets/parser.go) keeps a value inside """...""" unchanged unless it holds a
# double quote; a URL never does.
[[ $VALUES != *'"'* ]] || die "a value for $APP holds a double quote, which fly secrets import cannot carry."
say "setting ${NAMES[*]} on $APP (its machines restart with them)"
while IFS= read -r line; do
    [[ -n $line ]] || continue
    printf '%s="""%s"""\n' "${line%%=*}" "${line#*=}"
done <<<"$VALUES" | fly secrets import --app "$APP" >&2
printf 'published %s\n' "$digest"
