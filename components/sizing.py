"""From the documented size (CPUs, memory, storage) to the smallest provider class that meets it. Pure functions.

One rule is shared by all three clouds: production never runs on burstable / shared CPUs, whose credits run out
under sustained load; dev and staging take the cheapest class that meets the size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MB_PER_GB = 1024


@dataclass(frozen=True)
class Size:
    cpus: int
    memory_mb: int
    storage_gb: int


@dataclass(frozen=True)
class InstanceClass:
    name: str
    cpus: int
    memory_mb: int
    burstable: bool


def _rds(family: str, size: str, cpus: int, memory_gb: int) -> InstanceClass:
    return InstanceClass(f"db.{family}.{size}", cpus, memory_gb * MB_PER_GB, burstable=family.startswith("t"))


# Graviton classes for PostgreSQL, cheapest first within equal CPUs (t4g < m7g < r7g), then the 96-vCPU Intel ones.
RDS_CLASSES: tuple[InstanceClass, ...] = (
    _rds("t4g", "micro", 2, 1), _rds("t4g", "small", 2, 2), _rds("t4g", "medium", 2, 4), _rds("t4g", "large", 2, 8),
    _rds("m7g", "large", 2, 8), _rds("r7g", "large", 2, 16),
    _rds("t4g", "xlarge", 4, 16), _rds("m7g", "xlarge", 4, 16), _rds("r7g", "xlarge", 4, 32),
    _rds("t4g", "2xlarge", 8, 32), _rds("m7g", "2xlarge", 8, 32), _rds("r7g", "2xlarge", 8, 64),
    _rds("m7g", "4xlarge", 16, 64), _rds("r7g", "4xlarge", 16, 128),
    _rds("m7g", "8xlarge", 32, 128), _rds("r7g", "8xlarge", 32, 256),
    _rds("m7g", "12xlarge", 48, 192), _rds("r7g", "12xlarge", 48, 384),
    _rds("m7g", "16xlarge", 64, 256), _rds("r7g", "16xlarge", 64, 512),
    _rds("m6i", "24xlarge", 96, 384), _rds("r6i", "24xlarge", 96, 768),
)


class SizingError(ValueError):
    """No class of the provider meets the size; the message says what does exist."""


def rds_class(size: Size, *, production: bool, connections: int = 0) -> InstanceClass:
    """The first (cheapest) RDS class with at least the CPUs and memory, and memory for `connections` server
    connections (`max_connections_for`); no burstable class in production."""
    for candidate in RDS_CLASSES:
        if candidate.burstable and production:
            continue
        if (candidate.cpus >= size.cpus and candidate.memory_mb >= size.memory_mb
                and max_connections_for(candidate.memory_mb) >= connections):
            return candidate
    raise SizingError(
        f"no RDS instance class has {size.cpus} vCPUs, {size.memory_mb} MB and room for {connections} connections "
        "(the largest: 96 vCPUs, 768 GB)"
    )


def rds_instance_class(size: Size, *, production: bool, connections: int = 0) -> str:
    return rds_class(size, production=production, connections=connections).name


# --- connections ---
# RDS's own default is max_connections = LEAST(DBInstanceClassMemory/9531392, 5000) (RDS User Guide, "Maximum
# number of database connections"). We set max_connections explicitly to that formula on the class's nominal memory,
# on both clouds, so a class's connection room is known before deploy (Cloud SQL's defaults are far lower:
# 100 connections for 3.75 GB). PostgreSQL's own ceiling is 262143; 5000 is RDS's.
BYTES_PER_CONNECTION = 9_531_392
MAX_CONNECTIONS_CEILING = 5000
# superuser_reserved_connections (3) + the providers' own agents and an operator's psql / monitoring.
RESERVED_CONNECTIONS = 10
# The release: one session for migrations and roles, one polling the advisory lock.
RELEASE_CONNECTIONS = 2
SERVICE_COUNT = 4  # analytics, chat, assets, auth


def max_connections_for(memory_mb: int) -> int:
    """The max_connections gaia-db sets for an instance with this much memory (RDS's default formula)."""
    return min(memory_mb * 1024 * 1024 // BYTES_PER_CONNECTION, MAX_CONNECTIONS_CEILING)


def connections_needed(pool_size: int, max_overflow: int, instances: int) -> int:
    """Every service at its pool's peak on every instance, plus the release and the reserved slots."""
    return SERVICE_COUNT * instances * (pool_size + max_overflow) + RELEASE_CONNECTIONS + RESERVED_CONNECTIONS


def cloudsql_memory_mb(tier: str) -> int:
    return int(tier.rsplit("-", 1)[1])


def storage_ceiling_gb(storage_gb: int, limit_gb: int) -> int | None:
    """How far storage autoscaling may grow: twice the allocation, never above the cloud's limit, and (AWS's rule)
    at least 10 % above the allocation; None when no such ceiling fits under the limit (autoscaling off)."""
    floor = math.ceil(storage_gb * 1.1)
    if floor > limit_gb:
        return None
    return min(max(storage_gb * 2, floor), limit_gb)


# Cloud SQL Enterprise custom machine types: 1 or an even number of vCPUs up to 96; memory a multiple of 256 MB,
# 0.9 to 6.5 GB per vCPU, and at least 3.75 GB.
CLOUDSQL_MAX_CPUS = 96
CLOUDSQL_MIN_MEMORY_MB = 3840
CLOUDSQL_MEMORY_STEP_MB = 256


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def cloudsql_tier(size: Size, connections: int = 0) -> str:
    """The smallest `db-custom-<cpus>-<memoryMb>` tier meeting the size and with memory for `connections`
    (`max_connections_for`); shared-core tiers give under one vCPU."""
    connection_mb = math.ceil(connections * BYTES_PER_CONNECTION / (1024 * 1024))
    if connections > MAX_CONNECTIONS_CEILING:
        raise SizingError(f"no Cloud SQL tier is given more than {MAX_CONNECTIONS_CEILING} connections by gaia-db")
    cpus = size.cpus if size.cpus == 1 else size.cpus + size.cpus % 2
    while cpus <= CLOUDSQL_MAX_CPUS:
        memory = _round_up(
            max(size.memory_mb, connection_mb, CLOUDSQL_MIN_MEMORY_MB, 0.9 * MB_PER_GB * cpus), CLOUDSQL_MEMORY_STEP_MB
        )
        if memory <= 6.5 * MB_PER_GB * cpus:
            return f"db-custom-{cpus}-{memory}"
        # More memory than 6.5 GB per vCPU allows: the next allowed CPU count gives room.
        cpus = 2 if cpus == 1 else cpus + 2
    raise SizingError(
        f"no Cloud SQL custom tier has {size.cpus} vCPUs and {size.memory_mb} MB (at most 96 vCPUs, 6.5 GB per vCPU)"
    )


@dataclass(frozen=True)
class FlyVm:
    size: str  # --vm-size
    memory_mb: int  # --vm-memory, always passed: a preset alone brings its own default memory


@dataclass(frozen=True)
class _FlyPreset:
    name: str
    cpus: int
    min_memory_mb: int
    max_memory_mb: int
    memory_step_mb: int
    shared: bool


# Fly Machines presets (fly-go machine_types.go MachinePresets): shared CPUs allow 256 MB to 2 GB per CPU in 256 MB
# steps, performance CPUs 2 GB to 8 GB per CPU in 1 GB steps (flyctl internal/machine/update.go).
FLY_PRESETS: tuple[_FlyPreset, ...] = tuple(
    _FlyPreset(f"shared-cpu-{n}x", n, 256 * n, 2048 * n, 256, shared=True) for n in (1, 2, 4, 6, 8)
) + tuple(
    _FlyPreset(f"performance-{n}x", n, 2048 * n, 8192 * n, 1024, shared=False) for n in (1, 2, 4, 6, 8, 10, 12, 14, 16)
)


def fly_vm(size: Size, *, production: bool) -> FlyVm:
    """The smallest Fly preset with the CPUs and a memory setting it allows, rounded up to the preset's step."""
    for preset in FLY_PRESETS:
        if preset.shared and production:
            continue
        memory = max(_round_up(size.memory_mb, preset.memory_step_mb), preset.min_memory_mb)
        if preset.cpus >= size.cpus and memory <= preset.max_memory_mb:
            return FlyVm(preset.name, memory)
    raise SizingError(
        f"no Fly Machine preset has {size.cpus} CPUs and {size.memory_mb} MB (at most 16 CPUs, 128 GB"
        + (" on performance CPUs in production)" if production else ")")
    )
