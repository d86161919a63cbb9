# create/update of the github publish resource: each service's <SERVICE>_DATABASE_URL (and _DATABASE_READER_URLS)
# become secrets of the repository's deployment environment through `gh secret set NAME --env ENV --repo OWNER/NAME`,
# which reads the value on stdin when --body is absent (cli/cli pkg/cmd/secret/set/set.go getBody: io.ReadAll of
# stdin, trailing newline trimmed) and encrypts it locally with the environment's public key.
#
# The token comes from the deployer's environment (GAIA_DB_GITHUB_TOKEN), never from the stack: a fine-grained personal
# access token with "Secrets: write" and "Environments: read" on the repository, or a GitHub App installation token
# with the same permissions. A workflow's own GITHUB_TOKEN cannot write secrets (its permissions have no secrets
# scope), which is checked here rather than discovered as a 403.
command -v gh >/dev/null 2>&1 || die "gh (the GitHub CLI) is not installed; install it (https://cli.github.com) and make sure gh is on PATH."
command -v python3 >/dev/null 2>&1 || die "python3 is not installed; these scripts use it to read gh's --json output."
require_env GAIA_PUBLISH_REPOSITORY GAIA_PUBLISH_ENVIRONMENT
github_token
take_values
digest=$(publish_digest "github:$GAIA_PUBLISH_REPOSITORY:$GAIA_PUBLISH_ENVIRONMENT")
names=$(gh secret list --env "$GAIA_PUBLISH_ENVIRONMENT" --repo "$GAIA_PUBLISH_REPOSITORY" --json name --jq '.[].name') ||
    die "gh secret list --env $GAIA_PUBLISH_ENVIRONMENT --repo $GAIA_PUBLISH_REPOSITORY failed (see above); check that the repository and its environment exist and that GAIA_DB_GITHUB_TOKEN may read them."
if already_published "$digest" && has_all_names <<<"$names"; then
    say "$GAIA_PUBLISH_REPOSITORY ($GAIA_PUBLISH_ENVIRONMENT) already has ${NAMES[*]}; nothing to change"
    printf 'published %s\n' "$digest"
    exit 0
fi
while IFS= read -r line; do
    [[ -n $line ]] || continue
    name=${line%%=*}
    say "setting $name on $GAIA_PUBLISH_REPOSITORY ($GAIA_PUBLISH_ENVIRONMENT)"
    printf '%s' "${line#*=}" | gh secret set "$name" --env "$GAIA_PUBLISH_ENVIRONMENT" --repo "$GAIA_PUBLISH_REPOSITORY" >&2 ||
        die "gh secret set $name failed (see above); GAIA_DB_GITHUB_TOKEN must be allowed to write the environment's secrets (a workflow's GITHUB_TOKEN never is)."
done <<<"$VALUES"
printf 'published %s\n' "$digest"
