# gaia-db local provider: bring the streaming replicas to GAIA_REPLICAS (create and update; remove-replicas.sh sets
# 0 for delete). Replica i is PGDATA replica-<i> on port GAIA_PORT+i, made with `pg_basebackup -R` over the local
# socket and streaming through slot gaia_replica_<i>. Running replicas that are already right are left alone.
require_env GAIA_DATA_DIR GAIA_PORT GAIA_REPLICAS
port=$GAIA_PORT
want=$GAIA_REPLICAS
[[ $port =~ ^[0-9]+$ ]] || die "GAIA_PORT must be a port number, not '$port'."
[[ $want =~ ^[0-9]+$ ]] || die "GAIA_REPLICAS must be a number of replicas, not '$want'."
init_paths
init_server_user

primary_up=0
if [[ -f $PRIMARY/PG_VERSION ]] && node_pid "$PRIMARY" >/dev/null; then primary_up=1; fi
if (( want > 0 )); then
  (( primary_up )) || die "The primary in $PRIMARY is not running, so there is nothing to replicate; run the primary's create (pulumi up) first."
fi
if (( primary_up )); then find_bindir; fi

# Drops the named slots' leftovers (those of replicas that no longer exist), waiting for their senders to exit.
drop_slots_above() {  # keep slots gaia_replica_1..$1
  local i out line
  (( primary_up )) || return 0
  for ((i = 0; i < 50; i++)); do
    out=$(psql_super "$port" -d postgres -v keep="$1" 2>&1 <<'SQL'
SELECT slot_name, pg_drop_replication_slot(slot_name) FROM pg_replication_slots
 WHERE slot_name ~ '^gaia_replica_[0-9]+$' AND substring(slot_name FROM '[0-9]+$')::int > :keep AND NOT active;
SELECT count(*) FROM pg_replication_slots
 WHERE slot_name ~ '^gaia_replica_[0-9]+$' AND substring(slot_name FROM '[0-9]+$')::int > :keep;
SQL
    ) || { say "$out"; die "Dropping the replication slots of removed replicas failed."; }
    while read -r line; do
      if [[ $line == *'|' ]]; then say "dropped replication slot ${line%|}"; fi
    done <<<"$out"
    [[ ${out##*$'\n'} == 0 || $out == 0 ]] && return 0
    sleep 0.1
  done
  die "A removed replica's replication slot is still in use after 5 s; stop that replica's server and deploy again."
}

wait_streaming() {  # replica index
  local i n
  for ((i = 0; i < 300; i++)); do
    n=$(psql_super "$port" -d postgres -c "SELECT count(*) FROM pg_stat_replication
      WHERE application_name = 'gaia-replica-$1' AND state = 'streaming'")
    [[ $n == 1 ]] && return 0
    sleep 0.1
  done
  tail -n 15 "$LOGS/replica-$1.log" >&2 2>/dev/null || true
  die "replica-$1 did not start streaming from the primary within 30 s; see its log above."
}

ensure_replica() {  # index
  local i=$1 dir rport=$((port + $1)) name="replica-$1" changed=0 pid out
  dir=$(replica_dir "$i")
  if [[ -f $dir/PG_VERSION && -f $dir/standby.signal ]]; then
    write_if_changed "$dir/gaia.conf" "$(node_conf "gaia-$name" "$rport")" && changed=1
    if pid=$(node_pid "$dir"); then
      if (( changed )); then
        say "the configuration of $name changed; restarting it"
        restart_node "$dir" "$name"
      else
        say "$name already running on 127.0.0.1:$rport (pid $pid); configuration unchanged"
      fi
    else
      say "starting $name on 127.0.0.1:$rport"
      start_node "$dir" "$name"
    fi
  else
    rm -rf "$dir"  # what an interrupted pg_basebackup left behind
    # A slot left by an interrupted earlier attempt would make `pg_basebackup -C` fail.
    psql_super "$port" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
      WHERE slot_name = 'gaia_replica_$i' AND NOT active" >/dev/null
    say "copying the primary into $name with pg_basebackup -R (slot gaia_replica_$i)"
    out=$(as_server "$BINDIR/pg_basebackup" -D "$dir" -h "$RUN" -p "$port" -U "$REPLICATOR" -w \
      -R -C -S "gaia_replica_$i" -X stream -c fast 2>&1) \
      || { say "$out"; die "pg_basebackup could not copy the primary into $dir."; }
    write_if_changed "$dir/gaia.conf" "$(node_conf "gaia-$name" "$rport")" || true
    say "starting $name on 127.0.0.1:$rport"
    start_node "$dir" "$name"
  fi
  wait_streaming "$i"
}

# Remove the replicas above the wanted count, then their slots.
for dir in "$DATA"/replica-*; do
  i=${dir##*/replica-}
  [[ -d $dir && $i =~ ^[0-9]+$ ]] && (( i > want )) || continue
  stop_node "$dir" "replica-$i"
  rm -rf "$dir"
  say "removed replica-$i"
done
drop_slots_above "$want"

for ((i = 1; i <= want; i++)); do ensure_replica "$i"; done
if (( want > 0 )); then say "read replicas running and streaming: $want"; else say "no read replicas"; fi
