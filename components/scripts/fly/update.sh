# update: bring the existing cluster to the declared VM size, replica count, volume size and backups. A cluster
# deleted outside Pulumi is created again, as the declared state says it should exist. The resource is in this stack's
# state, so a cluster without the marker secrets is one this stack made before it kept them: it is marked, not adopted.
fly_setup
ensure_cluster ours
