"""The gaia-db policy pack: `pulumi preview --policy-pack policy`. Constructing the pack starts its server, so the
policies live in gaia_policies.py, which the tests import."""

import sys
from pathlib import Path

from pulumi_policy import EnforcementLevel, PolicyPack

HERE = Path(__file__).resolve().parent
# The policies read the tiers from the project's components/settings.py.
sys.path[:0] = [str(HERE), str(HERE.parent)]

from gaia_policies import policies  # noqa: E402  (needs the paths above)

PolicyPack(name="gaia-db", policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
