# gaia-db local provider: the replicas' delete runs replicas.sh with no replicas wanted.
GAIA_REPLICAS=0
