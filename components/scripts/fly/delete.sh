# delete: destroy the app with its machines and volumes; nothing to do when it is already gone.
fly_setup
state=$(cluster_state)
case $state in
    present*)
        say "destroying $APP with its machines and volumes"
        fly apps destroy "$APP" --yes >&2
        ;;
    elsewhere*)
        die "$APP belongs to the Fly organization ${state#elsewhere }, not ${GAIA_FLY_ORG:-the configured one}; not destroying it."
        ;;
    *)
        say "$APP does not exist; nothing to destroy"
        ;;
esac
