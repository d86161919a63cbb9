# gaia-db local provider: the pooler's delete. Stops PgBouncer and removes its directory (the auth file with the auth
# user's password among it); the auth user and its lookup function go with the cluster (delete.sh).
require_env GAIA_DATA_DIR
init_paths
stop_pooler
if [[ -d $DATA/pooler ]]; then
  rm -rf "$DATA/pooler"
  say "removed $DATA/pooler"
fi
