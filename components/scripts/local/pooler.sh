# gaia-db local provider: PgBouncer in front of the primary (create and update; pooler-stop.sh is the delete).
# Converges: a running pooler whose configuration, auth user and lookup function are already right is left alone.
#
#   clients --TLS (the cluster's CA, verify-full) + SCRAM--> PgBouncer :GAIA_POOLER_PORT
#           --TLS (verify-full against the same CA) + SCRAM--> the primary :GAIA_PORT
#
# Clients log in as their own service login; PgBouncer fetches that login's SCRAM verifier through auth_query, which
# runs as GAIA_POOLER_ROLE and calls one SECURITY DEFINER function that answers for the service logins only
# (GAIA_POOLER_LOGINS) and for nothing else. The only plaintext password is GAIA_POOLER_ROLE's own, generated here
# and kept in $DATA/pooler/userlist.txt (0600, the server user's); PgBouncer refuses that role as a client.
require_env GAIA_DATA_DIR GAIA_PORT GAIA_POOLER_PORT GAIA_DATABASE GAIA_POOLER_ROLE GAIA_POOLER_SCHEMA GAIA_POOLER_LOGINS
port=$GAIA_PORT
pooler_port=$GAIA_POOLER_PORT
db=$GAIA_DATABASE
auth_user=$GAIA_POOLER_ROLE
schema=$GAIA_POOLER_SCHEMA
[[ $port =~ ^[0-9]+$ ]] || die "GAIA_PORT must be a port number, not '$port'."
[[ $pooler_port =~ ^[0-9]+$ ]] && (( pooler_port >= 1024 && pooler_port <= 65535 )) \
  || die "GAIA_POOLER_PORT must be a port from 1024 to 65535, not '$pooler_port'."
for name in "$db" "$auth_user" "$schema" $GAIA_POOLER_LOGINS; do
  [[ $name =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "'$name' is not a lower-case identifier (GAIA_DATABASE, GAIA_POOLER_*)."
done
# Tunables (the bench's figure runs the same script): per-login pool, cap on the database's server connections.
pool_size=${GAIA_POOLER_POOL_SIZE:-20}
max_db=${GAIA_POOLER_MAX_DB_CONNECTIONS:-60}
max_clients=${GAIA_POOLER_MAX_CLIENTS:-1000}
for value in "$pool_size" "$max_db" "$max_clients"; do
  [[ $value =~ ^[1-9][0-9]{0,4}$ ]] || die "GAIA_POOLER_POOL_SIZE, _MAX_DB_CONNECTIONS and _MAX_CLIENTS must be positive integers."
done

init_paths
init_server_user
find_bindir
PGBOUNCER=${GAIA_PGBOUNCER:-}
if [[ -z $PGBOUNCER ]]; then
  PGBOUNCER=$(command -v pgbouncer 2>/dev/null || true)
  [[ -n $PGBOUNCER || ! -x /usr/sbin/pgbouncer ]] || PGBOUNCER=/usr/sbin/pgbouncer
fi
[[ -n $PGBOUNCER && -x $PGBOUNCER ]] \
  || die "PgBouncer is not installed; install it (Debian/Ubuntu: apt-get install pgbouncer; macOS: brew install pgbouncer) or set GAIA_PGBOUNCER to its path."
node_pid "$PRIMARY" >/dev/null \
  || die "The primary in $PRIMARY is not running, so PgBouncer has nothing to pool; run the primary's create (pulumi up) first."
[[ -f $TLS/ca.crt && -f $TLS/server.crt && -f $TLS/server.key ]] || die "$TLS has no CA or server certificate; run the primary's create first."

POOLER=$DATA/pooler
mkdir -p "$POOLER"
chmod 0700 "$POOLER"
if [[ $EUID -eq 0 ]]; then chown "$SERVER_USER:" "$POOLER"; fi

# The auth user's password: made once, kept only in the auth file (0600), never in Pulumi's state or a command line.
AUTH_FILE=$POOLER/userlist.txt
auth_password=""
if [[ -f $AUTH_FILE ]] && [[ $(<"$AUTH_FILE") =~ ^\"$auth_user\"\ \"([A-Za-z0-9]{32,})\"$ ]]; then
  auth_password=${BASH_REMATCH[1]}
fi
if [[ -z $auth_password ]]; then
  say "making the password of $auth_user (kept in $AUTH_FILE only)"
  auth_password=$(openssl rand -hex 24) || die "openssl could not make a password for $auth_user."
  (umask 077 && printf '"%s" "%s"\n' "$auth_user" "$auth_password" >"$AUTH_FILE.new")
  mv -f "$AUTH_FILE.new" "$AUTH_FILE"
fi
chmod 0600 "$AUTH_FILE"
if [[ $EUID -eq 0 ]]; then chown "$SERVER_USER:" "$AUTH_FILE"; fi

# The auth user, its CONNECT, and the lookup function, as the superuser over the local socket (only a superuser may
# read pg_authid; the release's admin is no superuser, so it could not make this function). The release's role
# reconciliation leaves the auth user alone: it is not one of the roles it manages, and its explicit CONNECT grant
# survives the release's REVOKE CONNECT ... FROM PUBLIC.
logins_sql=""
for name in $GAIA_POOLER_LOGINS; do logins_sql+="${logins_sql:+, }'$name'"; done
out=$(PGOPTIONS='-c client_min_messages=warning' psql_super "$port" -d "$db" \
  -v auth_user="$auth_user" -v schema="$schema" -v db="$db" 2>&1 <<SQL
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS', :'auth_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'auth_user') \gexec
SELECT format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS LOGIN', :'auth_user') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'auth_user') \gexec
SELECT format('CREATE SCHEMA IF NOT EXISTS %I', :'schema') \gexec
SELECT format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', :'schema') \gexec
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', :'schema', :'auth_user') \gexec
SELECT format(\$f\$CREATE OR REPLACE FUNCTION %I.lookup(login text, OUT usename name, OUT passwd text)
  RETURNS record LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
  \$body\$ SELECT rolname, rolpassword FROM pg_catalog.pg_authid
    WHERE rolname = login AND rolname IN ($logins_sql) AND rolcanlogin AND NOT rolsuper
      AND (rolvaliduntil IS NULL OR rolvaliduntil > now()) \$body\$\$f\$, :'schema') \gexec
SELECT format('REVOKE ALL ON FUNCTION %I.lookup(text) FROM PUBLIC', :'schema') \gexec
SELECT format('GRANT EXECUTE ON FUNCTION %I.lookup(text) TO %I', :'schema', :'auth_user') \gexec
SQL
) || { say "$out"; die "Creating the pooler's auth user $auth_user and its lookup function failed."; }

auth_login_works() {  # the way PgBouncer logs in: TCP, verified TLS, SCRAM; the password travels in the environment
  PGPASSWORD=$auth_password PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -w -At -c 'SELECT 1' \
    "host=127.0.0.1 port=$port dbname=$db user=$auth_user sslmode=verify-full sslrootcert='$TLS/ca.crt'" >/dev/null 2>&1
}
if ! auth_login_works; then
  say "setting the password of $auth_user"
  set_password "$port" "$auth_user" "$auth_password"
  auth_login_works || die "$auth_user still cannot log in over verified TLS on 127.0.0.1:$port after its password was set."
fi

changed=0
write_if_changed "$POOLER/pg_hba.conf" "# Managed by gaia-db's local provider: TLS and SCRAM for every client; the auth user is no client.
# TYPE   DATABASE  USER         ADDRESS        METHOD
hostssl  all       $auth_user   127.0.0.1/32   reject
hostssl  all       all          127.0.0.1/32   scram-sha-256" && changed=1
# The certificate's digest is in the file, so a reissued certificate (create.sh) restarts PgBouncer with it.
cert_digest=$(openssl x509 -in "$TLS/server.crt" -noout -fingerprint -sha256 2>/dev/null) || cert_digest=unknown
write_if_changed "$POOLER/pgbouncer.ini" "; Managed by gaia-db's local provider; rewritten on every deploy.
; server certificate: $cert_digest
[databases]
$db = host=127.0.0.1 port=$port dbname=$db

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pooler_port
unix_socket_dir =
pidfile = $POOLER/pgbouncer.pid
logfile = $LOGS/pgbouncer.log
auth_type = hba
auth_hba_file = $POOLER/pg_hba.conf
auth_file = $AUTH_FILE
auth_user = $auth_user
auth_query = SELECT usename, passwd FROM $schema.lookup(\$1)
; Transaction pooling: a server connection is a client's for one transaction. PgBouncer 1.18 has no prepared
; statements in this mode (README, \"Pooled connections\"); session state (SET, advisory locks, LISTEN) does not last.
pool_mode = transaction
default_pool_size = $pool_size
max_db_connections = $max_db
max_client_conn = $max_clients
client_tls_sslmode = require
client_tls_cert_file = $TLS/server.crt
client_tls_key_file = $TLS/server.key
client_tls_protocols = secure
server_tls_sslmode = verify-full
server_tls_ca_file = $TLS/ca.crt
server_tls_protocols = secure
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0" && changed=1
chmod 0600 "$POOLER/pgbouncer.ini" "$POOLER/pg_hba.conf"

pooler_listens() {
  (exec 3<>"/dev/tcp/127.0.0.1/$pooler_port") 2>/dev/null
}
start_pooler() {
  local out i
  if ! out=$(ulimit -n 4096 2>/dev/null || true; as_server "$PGBOUNCER" -d -q "$POOLER/pgbouncer.ini" 2>&1); then
    say "$out"
    tail -n 15 "$LOGS/pgbouncer.log" >&2 2>/dev/null || true
    die "PgBouncer did not start; see its log above."
  fi
  for ((i = 0; i < 100; i++)); do
    if pooler_pid >/dev/null && pooler_listens; then return 0; fi
    sleep 0.1
  done
  tail -n 15 "$LOGS/pgbouncer.log" >&2 2>/dev/null || true
  die "PgBouncer is not listening on 127.0.0.1:$pooler_port after 10 s; see its log above."
}

if pid=$(pooler_pid); then
  if (( changed )); then
    say "PgBouncer's configuration changed; restarting it"
    stop_pooler
    start_pooler
  else
    say "PgBouncer already running on 127.0.0.1:$pooler_port (pid $pid); configuration unchanged"
  fi
else
  say "starting PgBouncer on 127.0.0.1:$pooler_port"
  start_pooler
fi
say "pooler ready: postgresql://<service login>@127.0.0.1:$pooler_port/$db?sslmode=verify-full&sslrootcert=$TLS/ca.crt"
