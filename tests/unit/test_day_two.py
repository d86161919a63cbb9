"""Day two on AWS RDS and Cloud SQL (issue 10): each defect an expert read found, as the declaration that avoids it.

The lifecycle test (test_lifecycle.py) proves the same from before/after evaluations; these pin each fix directly.
"""

from __future__ import annotations

import pytest
from program import Declared, Evaluation, FakeCloud, evaluate, provider_config, run_error

from components.gcp import backup_days
from components.settings import TIERS, SettingsError, parse_settings
from components.sizing import cloudsql_memory_mb, connections_needed, max_connections_for

ENVS = ("dev", "staging", "prod")
RDS = "aws:rds/instance:Instance"
CLOUDSQL = "gcp:sql/databaseInstance:DatabaseInstance"


def _gcp(env: str, **extra: object) -> Evaluation:
    return evaluate(env, provider_config(env, "gcp", **extra))


def _primary(ev: Evaluation) -> Declared:
    return next(r for r in ev.of_type(CLOUDSQL) if "masterInstanceName" not in r.inputs)


def _replicas(ev: Evaluation) -> list[Declared]:
    return [r for r in ev.of_type(CLOUDSQL) if "masterInstanceName" in r.inputs]


# 1. A Cloud SQL disk that grew by itself is no change, on the primary and on every replica; growth is bounded.
@pytest.mark.parametrize("env", ENVS)
def test_cloudsql_grown_disk_is_no_change_and_growth_is_bounded(env: str) -> None:
    ev = _gcp(env, readReplicas=2)
    storage = TIERS[env].size.storage_gb  # type: ignore[index]
    for instance in ev.of_type(CLOUDSQL):
        assert "settings.diskSize" in instance.ignore_changes, instance.name
        s = instance.inputs["settings"]
        assert s["diskAutoresize"] is True and s["diskSize"] == storage
        assert s["diskAutoresizeLimit"] == 2 * storage


# 2. Retained backups exceed the transaction-log days (the API refuses anything else), on every tier and retention.
@pytest.mark.parametrize("retention", range(1, 36))
def test_cloudsql_retained_backups_exceed_log_days(retention: int) -> None:
    log_days, retained = backup_days(retention)
    assert 1 <= log_days <= 7 and retained > log_days and retained >= retention


@pytest.mark.parametrize("env", ENVS)
def test_cloudsql_declares_both_retentions_per_tier(env: str) -> None:
    backup = _primary(_gcp(env)).inputs["settings"]["backupConfiguration"]
    log_days = backup["transactionLogRetentionDays"]  # never left to the API's default of 7
    assert backup["backupRetentionSettings"]["retainedBackups"] > log_days >= 1


# 3. Read replicas take no maintenance window; the primary keeps its own.
@pytest.mark.parametrize("env", ENVS)
def test_cloudsql_replicas_have_no_maintenance_window(env: str) -> None:
    ev = _gcp(env, readReplicas=2)
    assert _primary(ev).inputs["settings"]["maintenanceWindow"] == {"day": 7, "hour": 5}
    for replica in _replicas(ev):
        assert "maintenanceWindow" not in replica.inputs["settings"]


# 5. Every RDS instance generation leaves a final snapshot of its own name.
def test_rds_final_snapshot_name_changes_with_every_instance_generation() -> None:
    def snapshot(**extra: object) -> str:
        ev = evaluate("staging", provider_config("staging", "aws", **extra))
        return str(ev.one(RDS, "primary").inputs["finalSnapshotIdentifier"])

    first = snapshot()
    assert snapshot() == first  # the same instance: no diff
    assert snapshot(backupRetentionDays=5) == first  # an in-place change: the same generation
    assert snapshot(databaseName="gaia_app") != first  # db_name replaces the instance: a new generation


# 6. Deleting a staging or prod Cloud SQL instance keeps its backups and takes a final one.
@pytest.mark.parametrize("env", ENVS)
def test_cloudsql_keeps_a_final_backup_in_staging_and_prod(env: str) -> None:
    s = _primary(_gcp(env)).inputs["settings"]
    if env == "dev":
        assert not s.get("retainBackupsOnDelete") and "finalBackupConfig" not in s
    else:
        assert s["retainBackupsOnDelete"] is True
        assert s["finalBackupConfig"] == {"enabled": True, "retentionDays": 30}


# 7. Private networking prerequisites.
NETWORK = "projects/gaia-project/global/networks/gaia-vpc"


def test_cloudsql_private_network_declares_private_services_access() -> None:
    ev = _gcp("staging", gcp={"privateNetwork": NETWORK})
    address = ev.one("gcp:compute/globalAddress:GlobalAddress")
    assert address.inputs["purpose"] == "VPC_PEERING" and address.inputs["network"] == NETWORK
    connection = ev.one("gcp:servicenetworking/connection:Connection")
    assert connection.inputs["service"] == "servicenetworking.googleapis.com"
    assert connection.inputs["network"] == NETWORK and connection.inputs["deletionPolicy"] == "ABANDON"
    for instance in ev.of_type(CLOUDSQL):
        assert connection.urn in instance.dependencies


def test_cloudsql_private_network_can_use_existing_private_services_access() -> None:
    ev = _gcp("staging", gcp={"privateNetwork": NETWORK, "privateServicesAccess": "existing"})
    assert not ev.of_type("gcp:servicenetworking/connection:Connection")


def test_rds_subnets_in_one_availability_zone_are_refused() -> None:
    aws = {"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd", "subnet-4567abcd"]}
    cloud = FakeCloud(subnet_zones={"subnet-0123abcd": "us-west-2a", "subnet-4567abcd": "us-west-2a"})
    config = provider_config("dev", "aws", aws=aws)
    with pytest.raises(SettingsError, match="at least two"):
        evaluate("dev", config, cloud=cloud)


# 8. Ceilings and required keys.
@pytest.mark.parametrize("storage", [10, 500, 40_000, 59_578, 59_579, 65_536])
def test_rds_autoscaling_ceiling_never_exceeds_64_tib(storage: int) -> None:
    size = {"cpus": 2, "memoryMb": 1024, "storageGb": storage}
    primary = evaluate("dev", provider_config("dev", "aws", size=size)).one(RDS, "primary").inputs
    ceiling = primary["maxAllocatedStorage"]
    assert ceiling <= 65_536
    assert ceiling == 0 or ceiling >= 1.1 * primary["allocatedStorage"]  # 0: autoscaling off, no room above


@pytest.mark.parametrize("missing", ["gcp:project", "gcp:region"])
def test_a_gcp_stack_without_project_or_region_is_refused(missing: str) -> None:
    config = provider_config("dev", "gcp")
    del config[missing]
    assert run_error("dev", config) == (
        f"{missing} is not set, but a gcp stack needs it; set it with `pulumi config set {missing} VALUE`."
    )


# 9. Connection capacity.
@pytest.mark.parametrize("instances", [1, 3])
@pytest.mark.parametrize("env", ENVS)
def test_every_pool_at_its_peak_fits_max_connections(env: str, instances: int) -> None:
    pool = TIERS[env].pool  # type: ignore[index]
    needed = connections_needed(pool.size, pool.max_overflow, instances)
    config = {"size": pool.size, "maxOverflow": pool.max_overflow, "instances": instances}
    aws = evaluate(env, provider_config(env, "aws", pool=config))
    [parameter] = [p for p in aws.one("aws:rds/parameterGroup:ParameterGroup").inputs["parameters"]
                   if p["name"] == "max_connections"]
    assert int(parameter["value"]) >= needed
    gcp = _gcp(env, pool=config)
    for instance in gcp.of_type(CLOUDSQL):
        flags = {f["name"]: f["value"] for f in instance.inputs["settings"]["databaseFlags"]}
        assert int(flags["max_connections"]) >= needed
        tier = instance.inputs["settings"]["tier"]
        assert int(flags["max_connections"]) == max_connections_for(cloudsql_memory_mb(tier))


def test_the_staging_budget_that_did_not_fit_now_does() -> None:
    assert connections_needed(10, 20, 1) == 132  # 4 x 30 + release 2 + reserved 10
    assert max_connections_for(1024) == 112 < 132  # db.t4g.micro: the class staging had
    assert max_connections_for(2048) == 225  # db.t4g.small: what staging gets now


def test_a_pool_that_cannot_fit_is_refused_in_one_sentence() -> None:
    with pytest.raises(SettingsError) as error:
        parse_settings({"provider": "aws", "adminEmail": "a@b.co", "pool": {"size": 500, "maxOverflow": 1000,
                        "instances": 100}}, stack="dev")
    assert str(error.value).startswith('gaia-db:pool is {"size": 500, "maxOverflow": 1000, "instances": 100}, but 4 '
                                       "services x 100 instance(s) x 1500 connections")
