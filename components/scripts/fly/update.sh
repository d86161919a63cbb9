# update: bring the existing cluster to the declared VM size, replica count, volume size and backups. A cluster
# deleted outside Pulumi is created again, as the declared state says it should exist.
fly_setup
ensure_cluster
