"""A provider switch loses nothing (issue 20, item 1).

Outside dev every stateful resource is `protect`ed, so an `up` that would delete it stops (policies never see
deletions; `protect` does), read back from the real program under the mock engine for every tier x provider. And
the release refuses a stack whose provider changed before anything is created, with a sentence that points to the
runbook's migration path.
"""

from __future__ import annotations

import pytest
from program import evaluate, provider_config

from components.release import ReleaseProvider, provider_switch

ENVS = ("dev", "staging", "prod")
# provider -> (type, name suffix) of each stateful resource: what holds the data, or would lose it when deleted.
STATEFUL = {
    "fly": [("command:local:Command", "-cluster")],  # its delete runs `fly apps destroy`
    "aws": [("aws:rds/instance:Instance", "")],  # the primary and every replica
    "gcp": [("gcp:sql/databaseInstance:DatabaseInstance", ""), ("gcp:sql/database:Database", "")],
}
RELEASE = "pulumi-python:dynamic/gaia:Release"


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("provider", sorted(STATEFUL))
def test_every_stateful_resource_outside_dev_is_protected(provider: str, env: str) -> None:
    ev = evaluate(env, provider_config(env, provider))
    stateful = [r for typ, suffix in STATEFUL[provider] for r in ev.of_type(typ) if r.name.endswith(suffix)]
    expected = 1 + (2 if env == "prod" and provider != "fly" else 0) + (provider == "gcp")
    assert len(stateful) == expected, [r.name for r in stateful]
    for resource in stateful:
        assert resource.protect is (env != "dev"), (resource.type, resource.name)
    # The release carries the provider, so the next stack file that names another one is refused (below).
    assert ev.one(RELEASE).inputs["provider"] == provider


def test_a_provider_switch_is_refused_with_the_runbooks_migration_path() -> None:
    olds = {"provider": "fly", "environment": "staging"}
    news = {**olds, "provider": "aws"}
    message = provider_switch(olds, news)
    assert message is not None
    assert "fly" in message and "aws" in message and "python -m dbops copy" in message
    assert "docs/RUNBOOK.md §10" in message and "\n" not in message
    failures = ReleaseProvider().check(olds, news).failures
    assert [(f.property, f.reason) for f in failures if f.property == "provider"] == [("provider", message)]


@pytest.mark.parametrize("olds", [{}, {"provider": "aws"}], ids=["first deploy", "same provider"])
def test_the_same_provider_or_a_first_deploy_passes(olds: dict[str, str]) -> None:
    assert provider_switch(olds, {"provider": "aws"}) is None


def test_the_runbook_section_the_refusal_names_exists() -> None:
    from program import ROOT

    runbook = (ROOT / "docs" / "RUNBOOK.md").read_text()
    assert "## 10. Moving an environment to another provider" in runbook
