# create/update of a <service>-fly publish resource: the service's DATABASE_URL (and DATABASE_READER_URLS) become
# secrets of its Fly app through `fly secrets import`, which reads NAME=VALUE lines on stdin
# (superfly/flyctl internal/command/secrets/import.go) and deploys them to the app's machines.
fly_start
digest=$(publish_digest "fly:$APP")
names=$(fly_secret_names) ||
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
