# gaia-db local provider: create (and update) the primary. Idempotent: a running cluster whose configuration,
# roles, database and admin password are already right is left exactly as it is.
require_env GAIA_DATA_DIR GAIA_PORT GAIA_DATABASE GAIA_ADMIN_USER GAIA_ADMIN_PASSWORD
# The password lives on in this shell only: no child process (least of all the server) inherits it.
admin_password=$GAIA_ADMIN_PASSWORD
unset GAIA_ADMIN_PASSWORD
port=$GAIA_PORT
db=$GAIA_DATABASE
admin=$GAIA_ADMIN_USER
[[ $port =~ ^[0-9]+$ ]] && (( port >= 1024 && port <= 65535 )) || die "GAIA_PORT must be a port from 1024 to 65535, not '$port'."
[[ $db =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "GAIA_DATABASE must be a lower-case identifier, not '$db'."
[[ $admin =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "GAIA_ADMIN_USER must be a lower-case identifier, not '$admin'."

init_paths
init_server_user
find_bindir
command -v openssl >/dev/null 2>&1 || die "openssl is not installed; install it to make the server's TLS certificate."
prepare_data_dir

if [[ ! -f $PRIMARY/PG_VERSION ]]; then
  say "initialising a PostgreSQL $(pg_major "$BINDIR") cluster in $PRIMARY (binaries: $BINDIR)"
  rm -rf "$PRIMARY"  # what an interrupted initdb left behind
  out=$(as_server "$BINDIR/initdb" -D "$PRIMARY" -U "$SUPERUSER" --auth-local=peer --auth-host=scram-sha-256 \
    -E UTF8 --locale=C --data-checksums 2>&1) || { say "$out"; die "initdb failed in $PRIMARY."; }
fi

ensure_tls  # the stack's own CA and the server certificate it signs (lib.sh); every node serves it

changed=0
include="include_if_exists = 'gaia.conf'"
if ! grep -qxF "$include" "$PRIMARY/postgresql.conf"; then
  printf '\n%s\n' "$include" >>"$PRIMARY/postgresql.conf"
  changed=1
fi
write_if_changed "$PRIMARY/gaia.conf" "$(node_conf gaia-primary "$port")" && changed=1
# TLS + scram for every TCP login; the superuser and the replicator exist for the local socket only.
write_if_changed "$PRIMARY/pg_hba.conf" "# Managed by gaia-db's local provider.
# TYPE   DATABASE     USER                        ADDRESS        METHOD
local    all          all                                        peer map=gaia
local    replication  $REPLICATOR                                peer map=gaia
hostssl  all          $SUPERUSER,$REPLICATOR      127.0.0.1/32   reject
hostssl  all          all                         127.0.0.1/32   scram-sha-256" && changed=1
write_if_changed "$PRIMARY/pg_ident.conf" "# Managed by gaia-db's local provider: the server's OS user may act as these roles.
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME
gaia       $SERVER_USER     $SUPERUSER
gaia       $SERVER_USER     $REPLICATOR" && changed=1

if pid=$(node_pid "$PRIMARY"); then
  if (( changed )); then
    say "the primary's configuration changed; restarting it"
    restart_node "$PRIMARY" primary
  else
    say "primary already running on 127.0.0.1:$port (pid $pid); configuration unchanged"
  fi
else
  say "starting the primary on 127.0.0.1:$port"
  start_node "$PRIMARY" primary
fi
if (( TLS_CHANGED )); then  # a reissued certificate: every running node reads it again (ssl settings reload)
  for dir in "$PRIMARY" "$DATA"/replica-*; do
    if [[ -d $dir ]] && node_pid "$dir" >/dev/null; then
      as_server "$BINDIR/pg_ctl" -D "$dir" reload >/dev/null || die "Reloading ${dir##*/} with the new certificate failed."
    fi
  done
fi

# Roles and database, created only when missing: psql prints a command tag for each statement it runs.
out=$(PGOPTIONS='-c client_min_messages=warning' psql_super "$port" -d postgres \
  -v admin="$admin" -v db="$db" -v replicator="$REPLICATOR" 2>&1 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER CREATEROLE CREATEDB', :'admin')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'admin') \gexec
SELECT format('GRANT pg_monitor TO %I', :'admin')
 WHERE NOT pg_has_role(:'admin', 'pg_monitor', 'MEMBER') \gexec
-- The admin is no superuser, so the release cannot switch these off for the statements that carry SCRAM verifiers
-- (ALTER ROLE ... PASSWORD): the superuser switches them off for every session of the admin.
SELECT format('ALTER ROLE %I SET %s', :'admin', setting)
  FROM unnest(ARRAY['pg_stat_statements.track_utility = off', 'log_statement = none']) AS setting
 WHERE NOT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
                    WHERE r.rolname = :'admin' AND s.setdatabase = 0
                      AND replace(setting, ' ', '') = ANY(s.setconfig)) \gexec
SELECT format('CREATE ROLE %I LOGIN REPLICATION', :'replicator')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'replicator') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'admin')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
\set QUIET on
\connect :"db"
\set QUIET off
SELECT 'CREATE EXTENSION pg_stat_statements'
 WHERE NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_stat_statements') \gexec
SQL
) || { say "$out"; die "Creating the roles and the database $db failed."; }
[[ -z $out ]] || say "created: ${out//$'\n'/, } (role $admin, database $db)"

admin_login_works() {  # over TCP with verified TLS, exactly as clients connect; the password travels in the environment
  PGPASSWORD=$admin_password PGCONNECT_TIMEOUT=10 "$BINDIR/psql" -X -w -At -c 'SELECT 1' \
    "host=127.0.0.1 port=$port dbname=$db user=$admin sslmode=verify-full sslrootcert='$TLS/ca.crt'" >/dev/null 2>&1
}

if admin_login_works; then
  say "$admin already logs in with its password"
else
  say "setting the password of $admin"
  set_password "$port" "$admin" "$admin_password"
  admin_login_works || die "$admin still cannot log in over verified TLS on 127.0.0.1:$port after its password was set."
fi

say "primary ready: postgresql://$admin@127.0.0.1:$port/$db?sslmode=verify-full&sslrootcert=$TLS/ca.crt"
# stdout is the CA certificate, nothing else: the program exports it as caCertificate (components/local.py).
cat "$TLS/ca.crt"
