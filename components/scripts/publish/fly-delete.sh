# delete of a <service>-fly publish resource: the secrets it set leave the app (`fly secrets unset`,
# internal/command/secrets/unset.go); an app that is gone already has nothing to remove.
fly_start
if ! names=$(fly_secret_names 2>/dev/null); then
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
