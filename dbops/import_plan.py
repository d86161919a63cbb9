"""`python -m dbops import-plan`: the resources file `pulumi import --file` takes to put an existing RDS or Cloud SQL
instance under a stack, so that the stack's first `pulumi up` updates the instance instead of creating another.

Every name comes from dbops.names, which the components use too. What is imported and what the stack creates
(docs/RUNBOOK.md §8):

- Imported: what holds the data or cannot be swapped under a running instance: the primary, the read replicas that
  already exist under the stack's names (`<identifier>-replica-<n>`), and on Cloud SQL the database and the admin
  user.
- Created by the first `pulumi up`, each taking over in an update of the instance: the RDS parameter group (an
  instance made the obvious way runs the default `default.postgresNN`, which cannot be modified) and security group
  (usually the VPC's default group, which no stack should own); the replicas that do not exist yet; the credentials,
  the final-snapshot suffix and the release. The RDS subnet group is neither: RDS cannot move an instance to another
  subnet group in the same VPC, so an adopted stack names the instance's own (`aws.subnetGroupName`) and declares
  none. A Cloud SQL instance on a private network keeps its private services access (`gcp.privateServicesAccess:
  existing`).

Parents: the two component resources (`PortableDatabase` and the provider's cluster) are entries of the file with
`component: true`; a fresh stack has neither yet, and `pulumi import` (3.94 and later) creates them empty and
skips one the stack already has. Each entry's `logicalName` is the program's resource name, so the URNs are the
program's. `pulumi import` protects what it imports unless told `--protect=false`.
"""

from __future__ import annotations

from typing import Any

from dbops import names
from dbops.errors import DbopsError

CLOUD_PROVIDERS = tuple(names.CLUSTER_COMPONENTS)
# The cloud resource types the plan imports, by the program's role for them.
TYPES = {
    "aws": {"instance": "aws:rds/instance:Instance"},
    "gcp": {
        "instance": "gcp:sql/databaseInstance:DatabaseInstance",
        "database": "gcp:sql/database:Database",
        "user": "gcp:sql/user:User",
    },
}


def import_plan(
    provider: str,
    environment: str,
    *,
    identifier: str | None = None,
    replicas: int | None = None,
    database_name: str | None = None,
    admin_user: str | None = None,
    project: str | None = None,
) -> dict[str, Any]:
    """The `pulumi import --file` document for `environment` on `provider` (aws or gcp).

    `identifier` is the instance's name on its cloud (the stack's `aws.identifier` / `gcp.instanceName`; default
    `gaia-<env>`); `replicas` how many of the stack's read replicas exist already (default the tier's); on gcp,
    `project` (required), `database_name` (`databaseName`) and `admin_user` (`gcp.adminUser`) name the rest.
    """
    if provider not in CLOUD_PROVIDERS:
        raise DbopsError(f"import-plan is for {' and '.join(CLOUD_PROVIDERS)} instances, not {provider}; "
                         "a Fly cluster is adopted by name (docs/RUNBOOK.md §8)")
    if environment not in names.ENVIRONMENTS:
        raise DbopsError(f"unknown environment {environment!r}; allowed: {', '.join(names.ENVIRONMENTS)}")
    if provider == "aws":
        given = [flag for flag, value in (("--project", project), ("--database-name", database_name),
                                          ("--admin-user", admin_user)) if value is not None]
        if given:
            raise DbopsError(f"{', '.join(given)} name nothing an RDS import needs (its id is the instance identifier);"
                             " set databaseName and aws.masterUsername in the stack's config instead")
    elif not project:
        raise DbopsError("import-plan --provider gcp needs --project, the Google Cloud project of the instance")
    if replicas is None:
        replicas = names.TIER_READ_REPLICAS[environment]
    if not 0 <= replicas <= 5:
        raise DbopsError(f"--replicas is {replicas}, but a stack declares 0 to 5 read replicas")

    prefix = names.resource_prefix(provider, environment, environment)
    instance = identifier or names.cloud_name(provider, environment)
    types = TYPES[provider]

    def cloud_id(instance_name: str) -> str:
        return instance_name if provider == "aws" else f"projects/{project}/instances/{instance_name}"

    resources: list[dict[str, Any]] = [
        {"type": names.DATABASE_COMPONENT, "name": "database", "logicalName": prefix, "component": True},
        {"type": names.CLUSTER_COMPONENTS[provider], "name": "cluster", "logicalName": prefix, "component": True,
         "parent": "database"},
        {"type": types["instance"], "name": "primary", "logicalName": names.child_name(prefix, "primary"),
         "id": cloud_id(instance), "parent": "cluster"},
    ]
    for index in range(1, replicas + 1):
        resources.append({
            "type": types["instance"], "name": f"replica{index}",
            "logicalName": names.replica_name(prefix, index),
            "id": cloud_id(names.replica_name(instance, index)), "parent": "cluster",
        })
    if provider == "gcp":
        database = database_name or names.default_database_name(provider, environment)
        user = admin_user or names.admin_user(environment)
        resources += [
            {"type": types["database"], "name": "sqlDatabase", "logicalName": names.child_name(prefix, "database"),
             "id": f"projects/{project}/instances/{instance}/databases/{database}", "parent": "cluster"},
            # Cloud SQL for PostgreSQL users are imported as project/instance/name (no host).
            {"type": types["user"], "name": "adminUser", "logicalName": names.child_name(prefix, "admin"),
             "id": f"{project}/{instance}/{user}", "parent": "cluster"},
        ]
    return {"resources": resources}
