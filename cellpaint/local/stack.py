"""The embedded AWS: moto in server mode on loopback, and the stack's resources created in it from
template.yaml's own definitions. Lambda functions are not created in moto (it would need Docker);
their specs (code, handler, environment, SQS event sources) are returned for the runner."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from cellpaint.local.template import ROOT, Template, Unresolved, camel, samconfig

ACCOUNT = "123456789012"  # moto's default account
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


@dataclass
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str
    environment: dict
    timeout: int
    sqs_sources: list = field(default_factory=list)  # [{"arn", "url", "batch_size", "window", "partial"}]
    schedules: list = field(default_factory=list)  # [seconds between invocations], from Schedule events


@dataclass
class Stack:
    endpoint: str
    region: str
    template: Template
    bucket: str
    topic_arn: str
    job_queue: str
    functions: list
    stood_in: list  # logical ids of resources not created in moto, with why

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id="test", aws_secret_access_key="test")

    def output(self, name: str) -> str:
        return self.template.resolve(self.template.doc["Outputs"][name]["Value"])


class StoodIn(dict):
    """The attributes of a resource moto does not hold: its Arn, and a placeholder for any other
    (GpuLaunchTemplate.LatestVersionNumber, say), since nothing here reads them."""

    def __init__(self, name: str, known: dict):
        super().__init__(known)
        self.name = name

    def __missing__(self, attr: str) -> str:
        return f"{self.name}.{attr}"


def start_moto(port: int):
    """moto server on 127.0.0.1:port, in a process of its own (cellpaint/local/moto_process.py).
    Batch without Docker. Returns (the server, with stop(); its endpoint)."""
    from cellpaint.local.moto_process import MotoProcess

    server = MotoProcess(port)
    return server, server.endpoint


class _Builder:
    """Creates each resource kind of the template that moto can hold, from its own properties
    (one method per CloudFormation type, named in CREATORS)."""

    def __init__(self, stack: Stack, t: Template, cfg: dict, restore):
        c = stack.client
        self.s3, self.sqs, self.sns, self.batch, self.events, self.iam = c("s3"), c("sqs"), c("sns"), c("batch"), c("events"), c("iam")
        self.stack, self.t, self.cfg, self.restore = stack, t, cfg, restore

    def name(self, lid: str) -> str:
        return f"{self.cfg['stack_name']}-{lid}"  # CloudFormation adds a random suffix

    def arn(self, svc: str, res: str) -> str:
        return f"arn:aws:{svc}:{self.cfg['region']}:{ACCOUNT}:{res}"

    def sqs_queue(self, lid, p):
        attrs = {"VisibilityTimeout": p.get("VisibilityTimeout"), "MessageRetentionPeriod": p.get("MessageRetentionPeriod"),
                 "RedrivePolicy": json.dumps(p["RedrivePolicy"]) if "RedrivePolicy" in p else None,
                 "SqsManagedSseEnabled": str(p.get("SqsManagedSseEnabled", False)).lower()}
        url = self.sqs.create_queue(QueueName=self.name(lid), Attributes={k: str(v) for k, v in attrs.items() if v is not None})["QueueUrl"]
        self.t.register(lid, url, Arn=self.arn("sqs", self.name(lid)), QueueName=self.name(lid), QueueUrl=url)

    def queue_policy(self, lid, p):
        for url in p["Queues"]:
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(p["PolicyDocument"])})
        self.t.register(lid, lid)

    def topic(self, lid, p):
        attrs = {k: str(p[k]) for k in ("DisplayName", "KmsMasterKeyId", "SignatureVersion") if k in p}
        topic_arn = self.sns.create_topic(Name=self.name(lid), Attributes=attrs)["TopicArn"]
        self.t.register(lid, topic_arn, TopicName=self.name(lid), TopicArn=topic_arn)

    def subscription(self, lid, p):
        sub = self.sns.subscribe(TopicArn=p["TopicArn"], Protocol=p["Protocol"], Endpoint=p["Endpoint"], ReturnSubscriptionArn=True)
        self.t.register(lid, sub["SubscriptionArn"])

    def bucket(self, lid, p):
        b = p["BucketName"]
        self.s3.create_bucket(Bucket=b)
        if "VersioningConfiguration" in p:
            self.s3.put_bucket_versioning(Bucket=b, VersioningConfiguration=p["VersioningConfiguration"])
        if "BucketEncryption" in p:
            rules = [{("Apply" + k if k == "ServerSideEncryptionByDefault" else k): v for k, v in r.items()}
                     for r in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]]
            self.s3.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in p:
            self.s3.put_public_access_block(Bucket=b, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
        if self.restore:
            self.restore(self.s3, b)
        queues = [{"QueueArn": q["Queue"], "Events": [q["Event"]],
                   "Filter": {"Key": {"FilterRules": q["Filter"]["S3Key"]["Rules"]}}}
                  for q in p.get("NotificationConfiguration", {}).get("QueueConfigurations", [])]
        self.s3.put_bucket_notification_configuration(Bucket=b, NotificationConfiguration={"QueueConfigurations": queues})
        self.t.register(lid, b, Arn=f"arn:aws:s3:::{b}", DomainName=f"{b}.s3.amazonaws.com")
        self.stack.bucket = b

    def compute_env(self, lid, p):
        # MANAGED needs EC2 (subnets, GPU instances); an UNMANAGED one stands in: the runner is the compute.
        role = self.iam.create_role(RoleName=self.name(lid), AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        ce = self.batch.create_compute_environment(computeEnvironmentName=self.name(lid), type="UNMANAGED", state=p.get("State", "ENABLED"),
                                              serviceRole=role)["computeEnvironmentArn"]
        self.t.register(lid, ce)

    def job_queue(self, lid, p):
        q = self.batch.create_job_queue(jobQueueName=self.name(lid), **camel({k: p[k] for k in ("State", "Priority", "ComputeEnvironmentOrder")}))
        self.t.register(lid, q["jobQueueArn"])
        self.stack.job_queue = q["jobQueueArn"]

    def job_definition(self, lid, p):
        kw = camel({k: p[k] for k in ("Type", "ContainerProperties", "RetryStrategy", "Timeout", "PlatformCapabilities",
                                      "PropagateTags") if k in p})
        params = {k: str(v) for k, v in p.get("Parameters", {}).items()}  # Batch takes strings; a Number parameter resolves to a number
        r = self.batch.register_job_definition(jobDefinitionName=self.name(lid), parameters=params, **kw)
        self.t.register(lid, r["jobDefinitionArn"])

    def rule(self, lid, p):
        rule_arn = self.events.put_rule(Name=self.name(lid), EventPattern=json.dumps(p["EventPattern"]), State=p.get("State", "ENABLED"),
                                   Description=p.get("Description", ""))["RuleArn"]
        self.events.put_targets(Rule=self.name(lid), Targets=[{"Id": x["Id"], "Arn": x["Arn"]} for x in p["Targets"]])
        self.t.register(lid, self.name(lid), Arn=rule_arn)

    def function(self, lid, p):
        env = {**self.t.resolve(self.t.globals_for("Function").get("Environment", {}).get("Variables", {})),
               **p.get("Environment", {}).get("Variables", {})}
        spec = FunctionSpec(lid, ROOT / p["CodeUri"], p["Handler"], {k: str(v) for k, v in env.items()},
                            int(p.get("Timeout", self.t.globals_for("Function").get("Timeout", 3))))
        for ev in p.get("Events", {}).values():
            if ev["Type"] == "SQS":
                q = ev["Properties"]
                url = self.sqs.get_queue_url(QueueName=q["Queue"].rsplit(":", 1)[1])["QueueUrl"]
                spec.sqs_sources.append({"arn": q["Queue"], "url": url, "batch_size": int(q.get("BatchSize", 10)),
                                         "window": int(q.get("MaximumBatchingWindowInSeconds", 0)),
                                         "partial": "ReportBatchItemFailures" in q.get("FunctionResponseTypes", [])})
            elif ev["Type"] == "Schedule":
                spec.schedules.append(rate_seconds(ev["Properties"]["Schedule"]))
        self.stack.functions.append(spec)
        self.t.register(lid, self.name(lid), Arn=self.arn("lambda", f"function:{self.name(lid)}"))


CREATORS = {"AWS::SQS::Queue": _Builder.sqs_queue, "AWS::SQS::QueuePolicy": _Builder.queue_policy, "AWS::SNS::Topic": _Builder.topic,
            "AWS::SNS::Subscription": _Builder.subscription, "AWS::S3::Bucket": _Builder.bucket,
            "AWS::Batch::ComputeEnvironment": _Builder.compute_env, "AWS::Batch::JobQueue": _Builder.job_queue,
            "AWS::Batch::JobDefinition": _Builder.job_definition, "AWS::Events::Rule": _Builder.rule,
            "AWS::Serverless::Function": _Builder.function}


def create_stack(endpoint: str, webhook_url: str, restore=None, template_path: Path = ROOT / "template.yaml",
                 params: dict | None = None) -> Stack:
    """Every resource of the template that moto can hold, created from its own properties.
    `restore(s3, bucket)` runs after the bucket exists and before its notifications are set, so
    restored objects trigger nothing."""
    cfg = samconfig()
    # The parameters `sam deploy --guided` would ask for; the EC2 ones only name what the runner stands in for.
    # The receiver is on loopback, so plain http stays on this machine.
    # On one machine an upload is done when the aws CLI returns: a lab's photos settle in 15 s, not AWS's 120.
    local = {"WebhookUrl": webhook_url, "AllowInsecureWebhook": "true", "ImageUri": "cellpaint:local", "SubnetIds": "subnet-local",
             "VpcId": "vpc-local", "AdaptSettleSeconds": "15", **(params or {})}
    t = Template(template_path, local,
                 cfg["stack_name"], cfg["region"], ACCOUNT)
    stack = Stack(endpoint, cfg["region"], t, "", "", "", [], [])
    build = _Builder(stack, t, cfg, restore)
    name, arn = build.name, build.arn

    todo = [lid for lid in t.resources if t.enabled(lid)]
    for lid in todo:  # what moto does not hold still gets ids, so references to it resolve
        if t.resources[lid]["Type"] not in CREATORS:
            kind = t.resources[lid]["Type"]
            iam_path = {"AWS::IAM::Role": "role/", "AWS::IAM::InstanceProfile": "instance-profile/"}.get(kind)
            t.register(lid, name(lid), Arn=f"arn:aws:iam::{ACCOUNT}:{iam_path}{name(lid)}" if iam_path
                       else arn(kind.split("::")[1].lower(), name(lid)))
            t.atts[lid] = StoodIn(name(lid), t.atts[lid])
            stack.stood_in.append(f"{lid} ({kind})")
    todo = [lid for lid in todo if t.resources[lid]["Type"] in CREATORS]
    while todo:  # in dependency order: a resource whose references do not resolve yet waits a round
        waiting = []
        for lid in todo:
            try:
                props = t.resolve(t.resources[lid].get("Properties", {}))
            except Unresolved:
                waiting.append(lid)
                continue
            CREATORS[t.resources[lid]["Type"]](build, lid, props)
        if len(waiting) == len(todo):
            raise RuntimeError(f"template.yaml: cannot resolve the references of {waiting}")
        todo = waiting
    stack.topic_arn = next(t.refs[lid] for lid in t.resources if t.resources[lid]["Type"] == "AWS::SNS::Topic")
    return stack


def rate_seconds(expression: str) -> int:
    """EventBridge's rate(N minute|minutes|hour|hours|day|days) in seconds (cron is not stood in)."""
    m = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", expression.strip())
    if not m:
        raise ValueError(f"{expression}: the local stack stands in for rate(...) schedules only")
    return int(m.group(1)) * {"minute": 60, "hour": 3600, "day": 86400}[m.group(2)]


def client_env(endpoint: str, region: str) -> dict:
    """What a process needs to reach the embedded AWS with boto3 or the aws CLI."""
    return {**CREDENTIALS, "AWS_DEFAULT_REGION": region, "AWS_REGION": region, "AWS_ENDPOINT_URL": endpoint}


def use_embedded_aws(endpoint: str, region: str) -> None:
    os.environ.update(client_env(endpoint, region))
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
