# create/update of the <name>-postgres-password resource: make the `postgres` user's password the one Pulumi generated.
#
# `fly postgres create --password X` would put the password in fly's argv (visible in ps and /proc), so the
# cluster is created with a flyctl-generated password and ours is applied afterwards, through stdin only:
#  1. `fly ssh console --command connect` runs postgres-flex's bin/connect (psql as `postgres`, authenticated with the
#     machine's current OPERATOR_PASSWORD) without a pseudo-terminal (internal/command/ssh/console.go: no PTY when a
#     command is given), so psql reads the ALTER ROLE from our stdin.
#  2. `fly secrets import` reads OPERATOR_PASSWORD=... from stdin and redeploys the machines. postgres-flex logs in as
#     `postgres` with OPERATOR_PASSWORD on every boot (internal/flypg/node.go PostInit), so the secret must match.
# printf is a bash builtin, so the password is never an argument of any process.
fly_setup
require_env GAIA_FLY_ADMIN_PASSWORD
password=$GAIA_FLY_ADMIN_PASSWORD
# flyctl's secrets parser (internal/command/secrets/parser.go) reads one line; inside """...""" a value survives
# unchanged unless it holds a double quote or a line break.
if [[ $password == *'"'* || $password == *$'\n'* || $password == *$'\r'* ]]; then
    die "the admin password contains a double quote or a line break, which fly secrets import cannot carry; generate it without them."
fi

state=$(cluster_state)
[[ $state == present* ]] || die "$APP does not exist, so its password cannot be set; the cluster resource creates it first."

say "setting the postgres user's password on $APP"
quote="'"  # a variable, not \', so the doubling below reads the same in every bash version
# Statement logging off for this transaction so the password never reaches the server log.
printf '%s\n' \
    '\set ON_ERROR_STOP on' \
    'BEGIN;' \
    "SET LOCAL log_statement = 'none';" \
    'SET LOCAL log_min_duration_statement = -1;' \
    "ALTER ROLE postgres WITH LOGIN PASSWORD '${password//$quote/$quote$quote}';" \
    'COMMIT;' |
    fly ssh console --app "$APP" --quiet --command connect >/dev/null

say "storing it as $APP's OPERATOR_PASSWORD secret and restarting the machines with it"
printf 'OPERATOR_PASSWORD="""%s"""\n' "$password" | fly secrets import --app "$APP" >&2
say "the postgres user of $APP now has the stack's admin password"
