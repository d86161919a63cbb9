# create: make the cluster unless it already exists (a second run creates nothing), then size and back it up.
fly_setup
ensure_cluster
