# create/update of the <name>-postgres-password resource: make the `postgres` user's password the stack's admin
# password, and create the stack's database when it is not `postgres`.
#
# `fly postgres create --password X` would put the password in fly's argv (visible in ps and /proc), so the
# cluster is created with a flyctl-generated password and ours is applied afterwards, through stdin only:
#  1. `fly ssh console --command connect` runs postgres-flex's bin/connect (psql as `postgres`, authenticated with the
#     machine's current OPERATOR_PASSWORD) without a pseudo-terminal (internal/command/ssh/console.go: no PTY when a
#     command is given), so psql reads our stdin. The server is sent a SCRAM verifier computed here, never the
#     password, with statement logging and pg_stat_statements' utility tracking off for that transaction (`postgres`
#     is a superuser on Fly, so it may turn them off).
#  2. `fly secrets import` reads OPERATOR_PASSWORD=... from stdin and redeploys the machines. postgres-flex logs in as
#     `postgres` with OPERATOR_PASSWORD on every boot (internal/flypg/node.go PostInit), so the secret must match.
# When the role's verifier already matches the password (an adopted cluster given its own password, or a rerun), both
# steps are skipped: step 2 restarts every machine.
fly_setup
require_env GAIA_FLY_ADMIN_PASSWORD GAIA_FLY_DATABASE
password=$GAIA_FLY_ADMIN_PASSWORD
# No child process needs the password in its environment: python3 and flyctl get it on stdin.
unset GAIA_FLY_ADMIN_PASSWORD
# flyctl's secrets parser (internal/command/secrets/parser.go) reads one line; inside """...""" a value survives
# unchanged unless it holds a double quote. Printable ASCII also keeps SASLprep out of the verifier.
printable_ascii() {
    local LC_ALL=C pattern='^[ -~]+$'
    [[ $1 =~ $pattern ]]
}
if ! printable_ascii "$password" || [[ $password == *'"'* ]]; then
    die "the admin password must be printable ASCII without a double quote, which fly secrets import can carry; generate it without other characters."
fi

state=$(cluster_state)
[[ $state == present ]] || die "$APP does not exist, so its password cannot be set; the cluster resource creates it first."

psql_on_app() { fly ssh console --app "$APP" --quiet --command connect; }

# The database (fly postgres create makes only `postgres`), and the role's current verifier.
current=$(printf '%s\n' \
    '\set ON_ERROR_STOP on' \
    "SELECT format('CREATE DATABASE %I', '$GAIA_FLY_DATABASE') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$GAIA_FLY_DATABASE')\\gexec" \
    "SELECT 'verifier=' || rolpassword FROM pg_authid WHERE rolname = 'postgres';" |
    psql_on_app | sed -n 's/^ *verifier=//p')
if [[ $(printf '%s\n%s' "$password" "$current" | fly_query password-matches) == yes ]]; then
    say "the postgres user of $APP already has the stack's admin password; nothing to change or restart"
    exit 0
fi

say "setting the postgres user's password on $APP"
verifier=$(printf '%s' "$password" | fly_query scram)
printf '%s\n' \
    '\set ON_ERROR_STOP on' \
    'BEGIN;' \
    "SET LOCAL log_statement = 'none';" \
    'SET LOCAL log_min_duration_statement = -1;' \
    'SET LOCAL log_min_error_statement = panic;' \
    'SET LOCAL pg_stat_statements.track_utility = off;' \
    "ALTER ROLE postgres WITH LOGIN PASSWORD '$verifier';" \
    'COMMIT;' |
    psql_on_app >/dev/null

say "storing it as $APP's OPERATOR_PASSWORD secret and restarting the machines with it"
printf 'OPERATOR_PASSWORD="""%s"""\n' "$password" | fly secrets import --app "$APP" >&2 ||
    die "the postgres user of $APP has the new password but its OPERATOR_PASSWORD secret does not; before any machine restarts, import the stack's admin password as that secret by hand (docs/fly.md, Secrets never on a command line)."
say "the postgres user of $APP now has the stack's admin password"
