# gaia-db local provider: stop every server of the cluster and remove its data directory.
require_env GAIA_DATA_DIR
init_paths
if [[ ! -e $DATA ]]; then
  say "$DATA is already gone"
  exit 0
fi
[[ -e $DATA/$MARKER ]] || die "$DATA is not a gaia-db local cluster (it has no $MARKER file); remove it by hand if it should go."
stop_pooler  # normally gone already: the pooler's own delete runs first (it depends on the primary)
for dir in "$DATA"/replica-* "$PRIMARY"; do
  if [[ -d $dir ]]; then stop_node "$dir" "${dir##*/}"; fi
done
# A server whose postmaster.pid is gone is still found by its command line (postgres -D <dir>).
if command -v pgrep >/dev/null 2>&1; then
  for pid in $(pgrep -f -- "-D $DATA/" || true); do
    [[ $(ps -o comm= -p "$pid" 2>/dev/null) == @(postgres|postmaster)* ]] || continue
    say "stopping a stray server (pid $pid)"
    kill -QUIT "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
fi
rm -rf "$DATA"
say "removed $DATA"
