# gaia-db local provider: shared functions for create.sh, replicas.sh, remove-replicas.sh and delete.sh.
#
# Layout of GAIA_DATA_DIR (owned by the server user, mode 0700):
#   primary/        the primary's PGDATA (gaia.conf lives here and is copied to replicas)
#   tls/            the stack's CA (ca.crt, ca.key) and the server certificate it signs (server.crt, server.key),
#                   served by every node; clients verify with sslmode=verify-full sslrootcert=tls/ca.crt
#   replica-<i>/    streaming replica i, port GAIA_PORT+i
#   wal-archive/    archived WAL of the primary (local point-in-time recovery)
#   run/            unix sockets (mode 0700: only the server user can connect through them)
#   log/            one server log per node
#
# Every setting arrives in the environment (the Command resource's `environment`), never on a command line.
set -euo pipefail
shopt -s extglob
umask 077
cd /  # the caller's directory may be unreadable to the server user

MARKER=.gaia-local-cluster
SUPERUSER=postgres           # local-socket maintenance only; it has no password and TCP rejects it
REPLICATOR=gaia_replicator   # streams over the local socket (peer authentication), no password

say() { printf '[gaia-db local] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

require_env() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || die "$name is not set; the local provider's scripts take their settings from the Command's environment."
  done
}

# --- paths ---------------------------------------------------------------------------------------------------

init_paths() {
  require_env GAIA_DATA_DIR
  DATA=${GAIA_DATA_DIR%/}
  [[ $DATA == /* && $DATA != / ]] || die "GAIA_DATA_DIR must be an absolute directory path, not '$GAIA_DATA_DIR'."
  # It is quoted inside postgresql.conf settings, where unix_socket_directories also splits at commas.
  [[ $DATA != *[\'\"\\,$'\n']* ]] \
    || die "The data directory '$DATA' contains a quote, backslash, comma or newline; set gaia-db:local.dataDir to a plainer path."
  PRIMARY=$DATA/primary
  RUN=$DATA/run
  LOGS=$DATA/log
  ARCHIVE=$DATA/wal-archive
  TLS=$DATA/tls
  # A unix socket path is limited to 107 bytes (".s.PGSQL.<port>" adds up to 15).
  (( ${#RUN} <= 92 )) \
    || die "The data directory path $DATA is too long for PostgreSQL's unix socket (at most 88 characters); set gaia-db:local.dataDir to a shorter path."
}

replica_dir() { printf '%s/replica-%s' "$DATA" "$1"; }

# --- the server user: PostgreSQL refuses to run as root ------------------------------------------------------

init_server_user() {
  if [[ $EUID -eq 0 ]]; then
    SERVER_USER=postgres
    id "$SERVER_USER" >/dev/null 2>&1 \
      || die "Running as root, the server must run as the unprivileged user 'postgres', which does not exist; install the PostgreSQL server package (it creates that user) or run as a regular user."
    command -v runuser >/dev/null 2>&1 \
      || die "Running as root needs runuser (util-linux) to start the server as 'postgres'; install util-linux or run as a regular user."
  else
    SERVER_USER=$(id -un)
  fi
}

as_server() {
  if [[ $EUID -eq 0 ]]; then runuser -u "$SERVER_USER" -- "$@"; else "$@"; fi
}

# --- server binaries -----------------------------------------------------------------------------------------

pg_major() {  # the major version of the binaries in $1, e.g. 15
  local out
  out=$("$1/pg_ctl" --version 2>/dev/null) || return 1
  [[ $out =~ \(PostgreSQL\)\ ([0-9]+) ]] || return 1
  printf '%s' "${BASH_REMATCH[1]}"
}

has_server_binaries() {
  local bin
  for bin in initdb pg_ctl postgres pg_basebackup psql; do [[ -x $1/$bin ]] || return 1; done
}

# Sets BINDIR: GAIA_PG_BINDIR if set, else the newest of `pg_config --bindir`, the PATH and the usual install
# locations; an existing cluster pins the major version it was made with.
find_bindir() {
  local candidates=() dir major best="" best_major=0 want=""
  [[ -f $PRIMARY/PG_VERSION ]] && want=$(<"$PRIMARY/PG_VERSION")
  if [[ -n ${GAIA_PG_BINDIR:-} ]]; then
    candidates=("$GAIA_PG_BINDIR")
  else
    if command -v pg_config >/dev/null 2>&1; then candidates+=("$(pg_config --bindir 2>/dev/null || true)"); fi
    if command -v initdb >/dev/null 2>&1; then candidates+=("$(dirname "$(command -v initdb)")"); fi
    for dir in /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /opt/homebrew/opt/postgresql@*/bin \
               /usr/local/opt/postgresql@*/bin /usr/local/pgsql/bin; do
      [[ -d $dir ]] && candidates+=("$dir")
    done
  fi
  for dir in "${candidates[@]}"; do
    [[ -n $dir ]] && has_server_binaries "$dir" || continue
    major=$(pg_major "$dir") || continue
    if [[ -n $want ]]; then
      [[ $major == "$want" ]] && { best=$dir; best_major=$major; break; }
    elif (( major > best_major )); then
      best=$dir; best_major=$major
    fi
  done
  if [[ -z $best && -n $want ]]; then
    die "The cluster in $DATA was made by PostgreSQL $want, whose server binaries are not installed; install PostgreSQL $want (server and contrib) or destroy the stack to start afresh."
  fi
  [[ -n $best ]] || die "No PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup, psql) were found${GAIA_PG_BINDIR:+ in GAIA_PG_BINDIR=$GAIA_PG_BINDIR}; install the PostgreSQL server with its contrib modules (Debian/Ubuntu: apt-get install postgresql postgresql-contrib; Fedora: dnf install postgresql-server postgresql-contrib; macOS: brew install postgresql@16) or set GAIA_PG_BINDIR to its bin directory."
  BINDIR=$best
}

# --- the data directory --------------------------------------------------------------------------------------

unreachable() {
  die "The server runs as '$SERVER_USER', which cannot reach $DATA because a parent directory is not traversable by it; set gaia-db:local.dataDir to a path it can reach (e.g. /var/tmp/gaia-db/<stack>) or run as a regular user."
}

# Creates the data directory for the server user and proves that user can reach it.
prepare_data_dir() {
  if [[ -e $DATA && ! -e $DATA/$MARKER ]] && [[ -n $(ls -A "$DATA" 2>/dev/null) ]]; then
    die "$DATA exists and is not a gaia-db local cluster; set gaia-db:local.dataDir to an empty or new directory."
  fi
  # Refuse before creating anything: the server user needs search permission on every existing parent.
  local existing
  existing=$(dirname "$DATA")
  while [[ ! -e $existing ]]; do existing=$(dirname "$existing"); done
  as_server test -x "$existing" 2>/dev/null || unreachable
  # Parents get ordinary permissions so the server user can traverse them (umask 077 would lock it out).
  (umask 022 && mkdir -p "$(dirname "$DATA")") 2>/dev/null \
    || die "Cannot create $(dirname "$DATA"); set gaia-db:local.dataDir to a directory you can write."
  mkdir -p "$DATA" "$RUN" "$LOGS" "$ARCHIVE" "$TLS" 2>/dev/null \
    || die "Cannot create $DATA; set gaia-db:local.dataDir to a directory you can write."
  touch "$DATA/$MARKER"
  chmod 0700 "$DATA" "$RUN" "$LOGS" "$ARCHIVE" "$TLS"
  if [[ $EUID -eq 0 ]]; then chown -R "$SERVER_USER:" "$DATA"; fi
  as_server test -w "$DATA" -a -x "$DATA" 2>/dev/null || unreachable
}

# Writes $2 to file $1 (owned by the server user) unless it already holds exactly that; returns 0 when it changed.
write_if_changed() {
  local path=$1 content=$2
  if [[ -f $path && "$(<"$path")" == "$content" ]]; then return 1; fi
  printf '%s\n' "$content" >"$path"
  if [[ $EUID -eq 0 ]]; then chown "$SERVER_USER:" "$path"; fi
  return 0
}

# The settings gaia-db manages for one node, kept in gaia.conf (included from postgresql.conf).
node_conf() {  # name port
  cat <<EOF
# Managed by gaia-db's local provider; rewritten on every deploy.
cluster_name = '$1'
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$RUN'
unix_socket_permissions = 0700
ssl = on
ssl_cert_file = '$TLS/server.crt'
ssl_key_file = '$TLS/server.key'
password_encryption = 'scram-sha-256'
shared_preload_libraries = 'pg_stat_statements'
log_min_duration_statement = 100
log_line_prefix = '%m [%p] %q%u@%d '
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
archive_mode = on
archive_command = 'test ! -f ../wal-archive/%f && cp %p ../wal-archive/%f'
EOF
}

# --- TLS: the stack's own CA ---------------------------------------------------------------------------------

TLS_NAMES="DNS:localhost,IP:127.0.0.1"  # every node listens on 127.0.0.1 only (node_conf)
CERT_RENEW_SECONDS=$((30 * 86400))    # a server certificate this close to expiry is reissued

server_cert_ok() {  # signed by this stack's CA, for localhost / 127.0.0.1, its key, and not about to expire
  [[ -f $TLS/server.crt && -f $TLS/server.key ]] || return 1
  openssl verify -CAfile "$TLS/ca.crt" "$TLS/server.crt" >/dev/null 2>&1 || return 1
  openssl x509 -in "$TLS/server.crt" -noout -checkend "$CERT_RENEW_SECONDS" >/dev/null 2>&1 || return 1
  openssl x509 -in "$TLS/server.crt" -noout -checkip 127.0.0.1 2>/dev/null | grep -q 'does match' || return 1
  [[ $(openssl x509 -in "$TLS/server.crt" -noout -pubkey 2>/dev/null) == \
     $(openssl pkey -in "$TLS/server.key" -pubout 2>/dev/null) ]]
}

# Sets up $TLS: a CA made once per cluster (its key never leaves $TLS), and a server certificate it signs, reissued
# when missing, not signed by that CA (a cluster made before the CA existed), or within 30 days of expiry.
ensure_tls() {
  local out csr
  if [[ ! -f $TLS/ca.crt || ! -f $TLS/ca.key ]]; then
    say "making the cluster's certificate authority ($TLS/ca.crt)"
    out=$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=gaia-db local CA $(basename "$DATA")" -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>&1) \
      || { say "$out"; die "openssl could not make the cluster's certificate authority."; }
    rm -f "$TLS/server.crt"  # whatever was there was signed by another CA
  fi
  if ! server_cert_ok; then
    say "making the server certificate for localhost / 127.0.0.1, signed by the cluster's CA"
    csr=$TLS/server.csr
    out=$(openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
        -keyout "$TLS/server.key.new" -out "$csr" 2>&1 \
      && openssl x509 -req -in "$csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial -days 825 \
        -extfile <(printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$TLS_NAMES") \
        -out "$TLS/server.crt.new" 2>&1) \
      || { rm -f "$csr" "$TLS"/*.new; say "$out"; die "openssl could not make the server certificate."; }
    rm -f "$csr"
    mv -f "$TLS/server.key.new" "$TLS/server.key"
    mv -f "$TLS/server.crt.new" "$TLS/server.crt"
    TLS_CHANGED=1
  fi
  chmod 0600 "$TLS"/*.key
  chmod 0644 "$TLS/ca.crt" "$TLS/server.crt"
  if [[ $EUID -eq 0 ]]; then chown -R "$SERVER_USER:" "$TLS"; fi
}
TLS_CHANGED=0

# --- starting and stopping nodes -----------------------------------------------------------------------------

node_pid() {  # PGDATA -> the postmaster's pid, if that process is alive and is a postgres
  local pid
  [[ -f $1/postmaster.pid ]] || return 1
  pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(ps -o comm= -p "$pid" 2>/dev/null) == @(postgres|postmaster)* ]] || return 1  # not a reused pid
  printf '%s' "$pid"
}

start_node() {  # PGDATA name
  local out
  if ! out=$(as_server "$BINDIR/pg_ctl" -D "$1" -l "$LOGS/$2.log" -w -t 60 start 2>&1); then
    say "$out"
    say "last lines of $LOGS/$2.log:"
    tail -n 15 "$LOGS/$2.log" >&2 2>/dev/null || true
    die "The $2 server did not start; see its log above."
  fi
}

restart_node() {  # PGDATA name
  local out
  if ! out=$(as_server "$BINDIR/pg_ctl" -D "$1" -l "$LOGS/$2.log" -m fast -w -t 60 restart 2>&1); then
    say "$out"
    tail -n 15 "$LOGS/$2.log" >&2 2>/dev/null || true
    die "The $2 server did not restart; see its log above."
  fi
}

# Fast shutdown by signal, so stopping works even when the binaries are gone; immediate after 30 s.
stop_node() {  # PGDATA name
  local pid i
  pid=$(node_pid "$1") || return 0
  say "stopping $2 (pid $pid)"
  kill -INT "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  say "$2 did not stop within 30 s; stopping it immediately"
  kill -QUIT "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# psql as the superuser over the local socket of the node on port $1; SQL on stdin.
psql_super() {
  local port=$1
  shift
  as_server "$BINDIR/psql" -X -At -v ON_ERROR_STOP=1 -h "$RUN" -p "$port" -U "$SUPERUSER" "$@"
}

# Sets the password of role $2 to $3 on the node on port $1, or dies. The literal reaches psql on stdin (never argv);
# statement logging and pg_stat_statements are off for it, and psql's error output is shown with it masked.
set_password() {
  local port=$1 role=$2 password=$3 literal out
  literal=${password//\'/\'\'}
  if ! out=$(printf '%s\n' '\set VERBOSITY terse' "SET log_statement = 'none';" \
      "SET log_min_duration_statement = -1;" "SET log_min_error_statement = panic;" \
      "SET pg_stat_statements.track_utility = off;" "ALTER ROLE \"$role\" PASSWORD '$literal';" \
      | psql_super "$port" -q -d postgres 2>&1); then
    say "${out//"$password"/[secret]}"
    die "Setting the password of $role failed."
  fi
}

# --- the pooler (pooler.sh): PgBouncer in $DATA/pooler ---------------------------------------------------------

pooler_pid() {  # the running PgBouncer's pid, if its pid file names a live pgbouncer
  local pid
  [[ -f $DATA/pooler/pgbouncer.pid ]] || return 1
  pid=$(head -n 1 "$DATA/pooler/pgbouncer.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(ps -o comm= -p "$pid" 2>/dev/null) == pgbouncer* ]] || return 1
  printf '%s' "$pid"
}

stop_pooler() {  # SIGINT: PgBouncer's safe shutdown (waits for the transactions in flight); SIGTERM after 10 s
  local pid i
  pid=$(pooler_pid) || return 0
  say "stopping PgBouncer (pid $pid)"
  kill -INT "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
