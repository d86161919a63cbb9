# delete of the github publish resource: the secrets it set leave the environment (`gh secret delete NAME --env ENV
# --repo R`, cli/cli pkg/cmd/secret/delete/delete.go); names already gone are skipped.
command -v gh >/dev/null 2>&1 || die "gh (the GitHub CLI) is not installed; install it (https://cli.github.com) and make sure gh is on PATH."
require_env GAIA_PUBLISH_REPOSITORY GAIA_PUBLISH_ENVIRONMENT
github_token
take_values
names=$(gh secret list --env "$GAIA_PUBLISH_ENVIRONMENT" --repo "$GAIA_PUBLISH_REPOSITORY" --json name --jq '.[].name') ||
    die "gh secret list --env $GAIA_PUBLISH_ENVIRONMENT --repo $GAIA_PUBLISH_REPOSITORY failed (see above); the secrets were not removed."
for name in "${NAMES[@]}"; do
    grep -qxF -- "$name" <<<"$names" || continue
    say "removing $name from $GAIA_PUBLISH_REPOSITORY ($GAIA_PUBLISH_ENVIRONMENT)"
    gh secret delete "$name" --env "$GAIA_PUBLISH_ENVIRONMENT" --repo "$GAIA_PUBLISH_REPOSITORY" >&2
done
