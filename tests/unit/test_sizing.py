"""Each documented tier's class on each cloud, and why it is the smallest that meets the size."""

from __future__ import annotations

import re

import pytest

from components.settings import TIERS
from components.sizing import (
    RDS_CLASSES,
    FlyVm,
    Size,
    SizingError,
    cloudsql_tier,
    fly_vm,
    rds_instance_class,
)

# tier -> (RDS class, Cloud SQL tier, Fly VM) for the tier's size and its pools' peak connections (README), with the
# reason in the comment.
CHOICES = {
    # 1 vCPU / 256 MB, 72 connections: the smallest RDS class (2 vCPU, 1 GB: 112 connections); Cloud SQL's custom floor
    # is 3.75 GB; Fly's 1x at 256 MB.
    "dev": ("db.t4g.micro", "db-custom-1-3840", FlyVm("shared-cpu-1x", 256)),
    # 2 vCPU / 1 GB, 132 connections: t4g.micro has the CPUs and memory but room for 112 connections only, so
    # t4g.small (225); Cloud SQL 2 vCPU at the 3.75 GB floor (422); Fly shared 2x at 1 GB.
    "staging": ("db.t4g.small", "db-custom-2-3840", FlyVm("shared-cpu-2x", 1024)),
    # 8 vCPU / 16 GB in production: no burstable t4g, so m7g.2xlarge (8, 32 GB); Cloud SQL exact (2 GB/vCPU);
    # Fly performance-8x at its 16 GB floor (shared CPUs are refused in production).
    "prod": ("db.m7g.2xlarge", "db-custom-8-16384", FlyVm("performance-8x", 16384)),
}


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_each_tier_maps_to_the_documented_class(env: str) -> None:
    tier, production = TIERS[env], env == "prod"  # type: ignore[index]
    size, connections = tier.size, tier.pool.connections_needed
    assert (rds_instance_class(size, production=production, connections=connections),
            cloudsql_tier(size, connections=connections), fly_vm(size, production=production)) == CHOICES[env]


def test_rds_takes_the_next_class_when_the_connections_need_more_memory() -> None:
    # max_connections = memory / 9,531,392 bytes: 112 on 1 GB, 225 on 2 GB, 450 on 4 GB.
    size = Size(2, 1024, 10)
    assert rds_instance_class(size, production=False, connections=112) == "db.t4g.micro"
    assert rds_instance_class(size, production=False, connections=113) == "db.t4g.small"
    assert rds_instance_class(size, production=False, connections=226) == "db.t4g.medium"


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 7, 8, 16, 33, 64, 96])
@pytest.mark.parametrize("memory_mb", [256, 1024, 3000, 3840, 8000, 16384, 65536, 200_000])
def test_cloudsql_tiers_obey_the_custom_machine_rules(cpus: int, memory_mb: int) -> None:
    try:
        tier = cloudsql_tier(Size(cpus, memory_mb, 10))
    except SizingError:
        assert memory_mb > 6.5 * 1024 * 96
        return
    match = re.fullmatch(r"db-custom-(\d+)-(\d+)", tier)
    assert match
    got_cpus, got_memory = int(match[1]), int(match[2])
    assert got_cpus == 1 or got_cpus % 2 == 0
    assert got_cpus >= cpus and got_memory >= memory_mb
    assert got_memory % 256 == 0 and got_memory >= 3840
    assert 0.9 * 1024 * got_cpus <= got_memory <= 6.5 * 1024 * got_cpus
    # Smallest: one step less memory would break a rule or the request.
    smaller = got_memory - 256
    assert smaller < max(memory_mb, 3840, 0.9 * 1024 * got_cpus)


def test_cloudsql_adds_cpus_when_memory_exceeds_six_and_a_half_gb_per_cpu() -> None:
    assert cloudsql_tier(Size(1, 16384, 10)) == "db-custom-4-16384"


def test_rds_picks_the_cheapest_class_that_fits_and_no_burstable_in_prod() -> None:
    assert rds_instance_class(Size(2, 4096, 10), production=False) == "db.t4g.medium"
    assert rds_instance_class(Size(2, 4096, 10), production=True) == "db.m7g.large"
    assert rds_instance_class(Size(4, 20000, 10), production=True) == "db.r7g.xlarge"
    assert rds_instance_class(Size(96, 500_000, 10), production=True) == "db.r6i.24xlarge"
    with pytest.raises(SizingError, match="96 vCPUs"):
        rds_instance_class(Size(96, 800_000, 10), production=True)
    assert all(c.memory_mb > 0 for c in RDS_CLASSES)


def test_fly_always_names_memory_and_never_shares_cpus_in_prod() -> None:
    assert fly_vm(Size(2, 1000, 10), production=False) == FlyVm("shared-cpu-2x", 1024)
    assert fly_vm(Size(1, 4096, 10), production=False) == FlyVm("shared-cpu-2x", 4096)  # 1x allows at most 2 GB
    assert fly_vm(Size(1, 256, 10), production=True) == FlyVm("performance-1x", 2048)
    # Performance machines take memory in whole GB (flyctl internal/machine/update.go).
    assert fly_vm(Size(8, 17000, 10), production=True) == FlyVm("performance-8x", 17408)
    # The 6x presets fit six CPUs exactly instead of the next 8x.
    assert fly_vm(Size(6, 2048, 10), production=False) == FlyVm("shared-cpu-6x", 2048)
    assert fly_vm(Size(6, 16384, 10), production=True) == FlyVm("performance-6x", 16384)
    with pytest.raises(SizingError, match="Fly Machine"):
        fly_vm(Size(32, 4096, 10), production=False)
