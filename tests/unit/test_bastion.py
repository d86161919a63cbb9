"""Issue 21: `aws.bastion`, the SSM bastion the release's tunnel goes through — its settings and refusals, what the
program declares for it under the mock engine (no inbound rule, the SSM agent's egress only, in the database's
subnets, allowed by the database's group), and that turning it on or off later never touches the RDS instances
(docs/lifecycle.md, through test_lifecycle's before/after judge)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from program import Evaluation, evaluate, provider_config
from test_lifecycle import Scenario, run
from test_settings import base, parse

from components.settings import SettingsError

ENVS = ("dev", "staging", "prod")
RDS = "aws:rds/instance:Instance"
SG = "aws:ec2/securityGroup:SecurityGroup"
EC2 = "aws:ec2/instance:Instance"
VPC = "vpc-0123abcd"
SUBNETS = ["subnet-0123abcd", "subnet-4567abcd"]


def program(env: str, **aws: Any) -> Evaluation:
    return evaluate(env, provider_config(env, "aws", aws=aws))


def test_the_bastion_defaults_and_forms() -> None:
    assert parse(base()).aws.bastion is None
    assert parse(base(aws={"bastion": False})).aws.bastion is None
    bastion = parse(base(aws={"bastion": True})).aws.bastion
    assert (bastion.instance_type, bastion.subnet_id, bastion.architecture) == ("t4g.nano", None, "arm64")
    x86 = parse(base(aws={"bastion": {"instanceType": "t3.nano"}})).aws.bastion
    assert x86.architecture == "x86_64"
    assert parse(base(aws={"bastion": {"instanceType": "c7gn.medium"}})).aws.bastion.architecture == "arm64"
    chosen = parse(base(aws={"vpcId": VPC, "subnetIds": SUBNETS, "bastion": {"subnetId": SUBNETS[1]}})).aws.bastion
    assert chosen.subnet_id == SUBNETS[1]


@pytest.mark.parametrize(("bastion", "key", "allowed"), [
    ("yes", "aws.bastion", "true, false or an object"),
    ({"size": "nano"}, "aws.bastion", "size is not a field"),
    ({"instanceType": "nano"}, "aws.bastion.instanceType", "EC2 instance type"),
    ({"subnetId": "subnet-x"}, "aws.bastion.subnetId", "AWS id"),
    ({"subnetId": "subnet-89abcdef"}, "aws.bastion.subnetId", "one of the database's aws.subnetIds"),
])
def test_a_bad_bastion_is_refused_in_one_sentence(bastion: Any, key: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as refused:
        parse(base(aws={"vpcId": VPC, "subnetIds": SUBNETS, "bastion": bastion}))
    message = str(refused.value)
    assert message.startswith(f"gaia-db:{key} is ") and allowed in message, message


@pytest.mark.parametrize("env", ENVS)
def test_without_the_key_nothing_is_declared(env: str) -> None:
    ev = program(env)
    assert not ev.of_type(EC2) and not [r for r in ev.resources if "bastion" in r.name]


@pytest.mark.parametrize("env", ENVS)
def test_the_bastion_has_no_way_in_but_ssm(env: str) -> None:
    ev = program(env, vpcId=VPC, subnetIds=SUBNETS, bastion=True)
    instance = ev.one(EC2, "-bastion")
    group = ev.one(SG, "-bastion-sg")
    assert group.inputs["ingress"] == [] and group.inputs["vpcId"] == VPC
    egress = {(rule["fromPort"], tuple(rule["cidrBlocks"])) for rule in group.inputs["egress"]}
    assert egress == {(443, ("0.0.0.0/0",)), (5432, ("172.31.0.0/16",))}
    assert instance.inputs["vpcSecurityGroupIds"] == [f"{group.name}-id"]
    assert instance.inputs["subnetId"] == SUBNETS[0]  # one of the database's subnets
    assert "keyName" not in instance.inputs and "associatePublicIpAddress" not in instance.inputs
    assert instance.inputs["ami"].startswith("resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-")
    assert instance.inputs["ami"].endswith("-arm64") and instance.inputs["instanceType"] == "t4g.nano"
    assert "ami" in instance.ignore_changes  # a newer image never replaces it
    assert instance.inputs["metadataOptions"]["httpTokens"] == "required"
    assert instance.inputs["rootBlockDevice"]["encrypted"] is True
    assert instance.inputs["tags"]["Name"] == f"gaia-{env}-bastion"  # how CI and the runbook find it
    # Its role may do what the SSM agent needs and nothing else.
    role = ev.one("aws:iam/role:Role", "-bastion")
    principal = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"]
    assert principal == {"Service": "ec2.amazonaws.com"}
    attached = [r.inputs["policyArn"] for r in ev.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if "bastion" in r.name]
    assert attached == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    # The database's group admits the bastion's group, and keeps admitting what it did before.
    database_group = ev.one(SG, f"gaia-db-{env}-sg")
    (ingress,) = database_group.inputs["ingress"]
    assert ingress["securityGroups"] == [f"{group.name}-id"] and ingress["fromPort"] == 5432
    assert ingress["cidrBlocks"] == ["172.31.0.0/16"]


def test_a_named_subnet_and_allowed_groups_are_kept() -> None:
    ev = program("staging", vpcId=VPC, subnetIds=SUBNETS, allowedSecurityGroupIds=["sg-0123abcd"],
                 bastion={"subnetId": SUBNETS[1], "instanceType": "t3.micro"})
    instance = ev.one(EC2, "-bastion")
    assert instance.inputs["subnetId"] == SUBNETS[1] and instance.inputs["ami"].endswith("-x86_64")
    (ingress,) = ev.one(SG, "gaia-db-staging-sg").inputs["ingress"]
    assert ingress["securityGroups"] == ["sg-0123abcd", "gaia-db-staging-bastion-sg-id"]


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize(("before", "after"), [
    ({}, {"bastion": True}),
    ({"bastion": True}, {}),
    ({"bastion": True}, {"bastion": {"instanceType": "t4g.micro"}}),
], ids=["on", "off", "resized"])
def test_the_bastion_never_touches_the_database(env: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    scenario = Scenario("aws.bastion", {"readReplicas": 1, "aws": before}, {"readReplicas": 1, "aws": after})
    assert run(env, "aws", scenario) == []
    # Stronger than "not replaced": the RDS instances' inputs are exactly the same.
    old = program(env, **before)
    new = program(env, **after)
    assert {r.name: r.inputs for r in old.of_type(RDS)} == {r.name: r.inputs for r in new.of_type(RDS)}
