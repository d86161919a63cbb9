# delete: destroy the app with everything it holds; nothing to do when it is already gone.
fly_setup
state=$(cluster_state)
case $state in
    present)
        destroy_app
        ;;
    elsewhere*)
        die "$APP belongs to the Fly organization ${state#elsewhere }, not ${GAIA_FLY_ORG:-the configured one}; not destroying it."
        ;;
    *)
        say "$APP does not exist; nothing to destroy"
        ;;
esac
