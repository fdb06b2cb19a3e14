"""What template.yaml grants and refuses, read the way CloudFormation reads it: parameters and
conditions resolved by the local stack's Template, and the roles as the SAM transform expands them
(.ci/sam_expand.py). The checkov scan itself runs in .ci/check-template.sh."""
from __future__ import annotations

import importlib.util
import json

import pytest

from cellpaint.local.template import NO_VALUE, Template
from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
REQUIRED = {"ImageUri": "cellpaint:test", "SubnetIds": "subnet-1", "VpcId": "vpc-1"}


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template(**params) -> Template:
    return Template(TEMPLATE, {**REQUIRED, **params}, "cellpaint", "us-east-1", "123456789012")


@pytest.fixture(scope="module")
def expanded() -> dict:
    return script("sam_expand").expand(TEMPLATE)


def statements(role: dict) -> list[dict]:
    return [s for p in role["Properties"].get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


# ---- webhooks: https, or http only when allowed ---------------------------------------------------

@pytest.mark.parametrize("url, allow, subscribed, protocol", [
    ("https://lab.example/hook", "false", True, "https"),
    ("http://lab.example/hook", "false", False, None),
    ("http://127.0.0.1:8080/sns", "true", True, "http"),
    ("", "false", False, None),
])
def test_webhook_is_https_unless_http_is_allowed(url, allow, subscribed, protocol):
    t = template(WebhookUrl=url, AllowInsecureWebhook=allow)
    assert t.enabled("WebhookSubscription") is subscribed
    if subscribed:
        assert t.resolve(t.resources["WebhookSubscription"]["Properties"]["Protocol"]) == protocol
    refused = t.condition("WebhookRefused")
    assert refused is (url.startswith("http://") and allow == "false")
    assert t.doc["Outputs"]["WebhookRefused"]["Condition"] == "WebhookRefused"


@pytest.mark.parametrize("url", ["ftp://lab.example/x", "lab.example/hook", "https://lab.example/a b", "javascript:alert(1)"])
def test_webhook_url_pattern_refuses_other_forms(url):
    with pytest.raises(ValueError, match="WebhookUrl"):
        template(WebhookUrl=url)


def test_local_stack_subscribes_its_loopback_receiver_over_http():
    from cellpaint.local.stack import create_stack, start_moto

    server, endpoint = start_moto(0)
    try:
        stack = create_stack(endpoint, "http://127.0.0.1:9/sns")
        subs = stack.client("sns").list_subscriptions()["Subscriptions"]
    finally:
        server.stop()
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("http", "http://127.0.0.1:9/sns")]


# ---- least privilege -----------------------------------------------------------------------------

def test_no_function_gets_the_managed_sqs_policy(expanded):
    for lid, r in expanded["Resources"].items():
        if r["Type"] == "AWS::IAM::Role":
            arns = json.dumps(r["Properties"].get("ManagedPolicyArns", []))
            assert "AWSLambdaSQSQueueExecutionRole" not in arns, lid


def test_each_function_polls_only_its_own_queue(expanded):
    res = expanded["Resources"]
    mappings = [r["Properties"] for r in res.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert {m["FunctionName"]["Ref"] for m in mappings} == {"IngestFunction", "NotifyFunction", "AdaptFunction", "DigestFunction"}
    poll = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}
    for m in mappings:
        lid = m["FunctionName"]["Ref"]
        role = res[res[lid]["Properties"]["Role"]["Fn::GetAtt"][0]]
        sqs = [s for s in statements(role) if any(a.startswith("sqs:") for a in as_list(s["Action"]))]
        polling = [s for s in sqs if set(as_list(s["Action"])) & poll]
        assert len(polling) == 1 and as_list(polling[0]["Resource"]) == [m["EventSourceArn"]], sqs
        # the adapt and digest functions also send their own delayed checks, and ingest its settling events, to their own queue only
        assert set(polling[0]["Action"]) == (poll | {"sqs:SendMessage"} if lid in ("AdaptFunction", "DigestFunction", "IngestFunction") else poll)
        sends = [s for s in sqs if s not in polling]  # the notify function schedules digest checks, and does nothing else with SQS
        assert [(as_list(s["Action"]), as_list(s["Resource"])) for s in sends] == ([(["sqs:SendMessage"], [{"Fn::GetAtt": ["DigestQueue", "Arn"]}])]
                                                                                    if lid == "NotifyFunction" else [])


# What takes no resource-level permission, and so may name "*".
UNSCOPABLE = {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "ecs:DiscoverPollEndpoint", "ec2:DescribeTags",
              "ecr:GetAuthorizationToken"}


def test_roles_name_resources_except_where_aws_allows_none(expanded):
    for lid, r in expanded["Resources"].items():
        if r["Type"] != "AWS::IAM::Role":
            continue
        assert not r["Properties"].get("ManagedPolicyArns"), f"{lid}: managed policies reach beyond the stack"
        for s in statements(r):
            if "*" in as_list(s["Resource"]):
                assert set(as_list(s["Action"])) <= UNSCOPABLE, (lid, s)


def test_batch_instance_role_is_the_ecs_agents_scoped():
    role = template().resources["GpuInstanceRole"]
    actions = {a for s in statements(role) for a in as_list(s["Action"])}
    assert "ecs:CreateCluster" not in actions  # Batch makes the cluster
    assert {"ecs:RegisterContainerInstance", "ecs:Poll", "ecs:Submit*", "ecr:BatchGetImage", "logs:PutLogEvents"} <= actions


def test_gpu_instances_require_imdsv2():
    t = template()
    data = t.resources["GpuLaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert data["HttpTokens"] == "required" and data["HttpPutResponseHopLimit"] == 1
    attached = t.resources["ComputeEnvironment"]["Properties"]["ComputeResources"]["LaunchTemplate"]
    assert attached == {"LaunchTemplateId": {"Ref": "GpuLaunchTemplate"},
                        "Version": {"Fn::GetAtt": ["GpuLaunchTemplate", "LatestVersionNumber"]}}
    for jd in ("JobDefinition", "TrainJobDefinition"):  # what the containers can no longer ask the metadata for
        env = t.resolve(t.resources[jd]["Properties"]["ContainerProperties"]["Environment"])
        assert {"Name": "AWS_DEFAULT_REGION", "Value": "us-east-1"} in env


def test_access_logging_follows_the_parameter():
    logging = lambda t: t.resolve(t.resources["Bucket"]["Properties"]["LoggingConfiguration"])  # noqa: E731
    assert logging(template()) is NO_VALUE
    assert logging(template(AccessLogBucket="lab-access-logs")) == {"DestinationBucketName": "lab-access-logs",
                                                                     "LogFilePrefix": "cellpaint/"}
    with pytest.raises(ValueError, match="AccessLogBucket"):
        template(AccessLogBucket="Not A Bucket")


def test_log_groups_are_encrypted_with_the_stacks_key():
    t = template()
    for lid in ("IngestLogGroup", "NotifyLogGroup"):
        assert t.resources[lid]["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["LogKey", "Arn"]}
    assert t.resources["LogKey"]["Properties"]["EnableKeyRotation"] is True


# ---- the scan's skip list ------------------------------------------------------------------------

def test_every_checkov_skip_has_a_reason_and_names_resources_that_exist():
    skips = script("checkov_scan").load_skips()
    assert skips
    resources = set(template().resources)
    for check, entry in skips.items():
        assert len(entry["why"]) > 40, check
        assert entry["resources"] is None or entry["resources"] <= resources, (check, entry["resources"] - resources)


# ---- the GPU instances' egress: anywhere on 443, or the stack's VPC endpoints only -----------------

def test_private_networking_limits_the_gpu_egress_to_the_endpoints():
    public = template()
    [rule] = public.resolve(public.resources["GpuSecurityGroup"]["Properties"]["SecurityGroupEgress"])
    assert rule["CidrIp"] == "0.0.0.0/0" and rule["FromPort"] == 443
    assert not public.enabled("S3Endpoint") and not public.enabled("GpuToS3")

    private = template(PrivateNetworking="true", RouteTableIds="rtb-1", S3PrefixListId="pl-63a5400a")
    private.register("GpuSecurityGroup", "sg-gpu")
    private.register("EndpointSecurityGroup", "sg-endpoints")
    inline = private.resolve(private.resources["GpuSecurityGroup"]["Properties"]["SecurityGroupEgress"])
    assert [r["CidrIp"] for r in inline] == ["127.0.0.1/32"]  # replaces the default allow-all
    egress = {k: private.resolve(private.resources[k]["Properties"]) for k in ("GpuToEndpoints", "GpuToS3")}
    assert all(e["FromPort"] == e["ToPort"] == 443 and "CidrIp" not in e for e in egress.values())
    assert egress["GpuToEndpoints"]["DestinationSecurityGroupId"] == "sg-endpoints"
    assert egress["GpuToS3"]["DestinationPrefixListId"] == "pl-63a5400a"
    services = {private.resolve(r["Properties"]["ServiceName"]).removeprefix("com.amazonaws.us-east-1.")
                for k, r in private.resources.items() if r["Type"] == "AWS::EC2::VPCEndpoint" and private.enabled(k)}
    assert services == {"s3", "ecr.api", "ecr.dkr", "logs", "ecs", "ecs-agent", "ecs-telemetry"}
    ingress = private.resolve(private.resources["EndpointsFromGpu"]["Properties"])
    assert ingress["SourceSecurityGroupId"] == "sg-gpu" and ingress["FromPort"] == 443
    rule = private.doc["Rules"]["PrivateNetworkingNeedsItsIds"]
    assert len(rule["Assertions"]) == 2  # CloudFormation refuses PrivateNetworking without the ids
