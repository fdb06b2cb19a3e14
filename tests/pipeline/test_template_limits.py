"""template.yaml holds the limits and alarms the fault handling relies on (issue 16); cfn-lint and
sam validate check that it is valid, these check that it says what the code expects."""
from __future__ import annotations

import json

import pytest
from cfnlint.decode import cfn_yaml

from shared.pipeline.ingest import NAMES
from shared.pipeline.notify import RUNNABLE_CANCELLED
from shared.pipeline.s3 import INGEST_CLAIMS, NOTIFY_CLAIMS, SWEEP_CLAIMS

from .conftest import ROOT, load_event


@pytest.fixture(scope="module")
def t():
    return cfn_yaml.load(str(ROOT / "template.yaml"))


def res(t, lid):
    return t["Resources"][lid]["Properties"]


def statements(t, lid):
    """A function's policy statements, from the role written out for it (issue 17)."""
    role = res(t, lid)["Role"]["Fn::GetAtt"][0]
    return [st for pol in res(t, role)["Policies"] for st in pol["PolicyDocument"]["Statement"]]


def arns(st) -> list[str]:
    r = st["Resource"]
    return [json.dumps(x) for x in (r if isinstance(r, list) else [r])]


def test_a_job_stuck_in_runnable_is_cancelled_after_the_parameter(t):
    actions = res(t, "JobQueue")["JobStateTimeLimitActions"]
    assert {a["Reason"] for a in actions} == {"CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY", "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
                                              "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
                                              "MISCONFIGURATION:EC2_INSTANCE_CONFIGURATION_UNSUPPORTED"}
    assert all(a["State"] == "RUNNABLE" and a["Action"] == "CANCEL" and a["MaxTimeSeconds"] == {"Ref": "RunnableTimeoutSeconds"}
               for a in actions)
    assert t["Parameters"]["RunnableTimeoutSeconds"]["Default"] == 7200
    # the cancelled job's FAILED event reaches notify, which recognises its status reason
    assert "FAILED" in res(t, "BatchJobFailedRule")["EventPattern"]["detail"]["status"]
    assert load_event("eventbridge-batch-runnable-timeout.json")["detail"]["statusReason"].startswith(RUNNABLE_CANCELLED)


def test_each_dead_letter_queue_has_an_alarm_on_the_topic(t):
    def queue(props):
        [m] = [m for m in props["Metrics"] if "MetricStat" in m]
        return m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]

    alarms = {queue(r["Properties"]): r["Properties"] for r in t["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"}
    dlqs = {lid for lid, r in t["Resources"].items() if r["Type"] == "AWS::SQS::Queue" and "DeadLetter" in lid}
    assert set(alarms) == dlqs == {"IngestDeadLetterQueue", "NotifyDeadLetterQueue", "AdaptDeadLetterQueue", "DigestDeadLetterQueue",
                                   "SubscriptionDeadLetterQueue"}
    for a in alarms.values():
        # on the rise of the dead letters, not their level: every new one alarms, not only the first
        [stat] = [m for m in a["Metrics"] if "MetricStat" in m]
        [expr] = [m for m in a["Metrics"] if "Expression" in m]
        assert stat["MetricStat"]["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible" and not stat["ReturnData"]
        assert expr["Expression"] == "DIFF(FILL(visible, 0))" and expr["ReturnData"] and a["Threshold"] == 0
        assert a["AlarmActions"] == [{"Ref": "Topic"}]
    # every subscription has somewhere to put what it could not deliver
    for lid in ("EmailSubscription", "WebhookSubscription"):
        assert res(t, lid)["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["SubscriptionDeadLetterQueue", "Arn"]}}
    # CloudWatch can publish only to a topic whose key lets it
    assert res(t, "Topic")["KmsMasterKeyId"] == {"Ref": "TopicKey"}
    principals = [s["Principal"] for s in res(t, "TopicKey")["KeyPolicy"]["Statement"]]
    assert {"Service": "cloudwatch.amazonaws.com"} in principals


def test_functions_are_bounded_by_the_event_source_not_reserved_concurrency(t):
    for lid in ("IngestFunction", "NotifyFunction", "AdaptFunction", "DigestFunction"):
        p = res(t, lid)
        assert "ReservedConcurrentExecutions" not in p
        [ev] = p["Events"].values()
        assert ev["Type"] == "SQS" and ev["Properties"]["ScalingConfig"]["MaximumConcurrency"] >= 2


def test_todays_aws_and_bounded_versions(t):
    [ec2] = res(t, "ComputeEnvironment")["ComputeResources"]["Ec2Configuration"]
    assert ec2["ImageType"] == "ECS_AL2023_NVIDIA"
    rules = {r.get("Prefix"): r for r in res(t, "Bucket")["LifecycleConfiguration"]["Rules"]}
    for prefix in ("incoming/", "results/"):
        assert rules[prefix]["NoncurrentVersionExpiration"]["NoncurrentDays"] == {"Ref": "NoncurrentVersionDays"}
        assert "ExpirationInDays" not in rules[prefix], "current uploads and results are never expired"
    assert t["Parameters"]["NoncurrentVersionDays"]["Default"] == 30


def test_the_window_cap_and_the_sweeper_read_their_parameters(t):
    assert res(t, "IngestFunction")["Environment"]["Variables"]["MAX_WINDOWS"] == {"Ref": "MaxWindowsPerImage"}
    assert t["Parameters"]["MaxWindowsPerImage"]["Default"] == 64
    sweep = res(t, "SweepFunction")
    assert sweep["Environment"]["Variables"]["HALF_PAIR_SECONDS"] == {"Ref": "HalfPairSeconds"}
    assert t["Parameters"]["HalfPairSeconds"]["Default"] == 86400
    [ev] = sweep["Events"].values()
    assert ev["Type"] == "Schedule" and ev["Properties"]["Schedule"].startswith("rate(")


def test_no_function_deletes_and_each_writes_only_its_own_leases(t):
    own = {"IngestFunction": INGEST_CLAIMS, "NotifyFunction": NOTIFY_CLAIMS, "SweepFunction": SWEEP_CLAIMS,
           "AdaptFunction": "jobs/claims/adapt/", "DigestFunction": "jobs/claims/digest/"}
    # Besides its own: the sweeper takes over an abandoned ingest lease; the notify function takes the
    # digest's "a check is on its way" lease; the digest function publishes through notify's leases;
    # ingest records each folder's first NAME of a canonical form, with the pair's last pairing.
    also = {"SweepFunction": (INGEST_CLAIMS,), "NotifyFunction": ("jobs/claims/digest/",), "DigestFunction": (NOTIFY_CLAIMS,),
            "IngestFunction": (NAMES,)}
    for lid, prefix in own.items():
        sts = statements(t, lid)
        assert not [s for s in sts if "s3:DeleteObject" in json.dumps(s["Action"])], f"{lid} may delete"
        puts = [a for s in sts if "s3:PutObject" in json.dumps(s["Action"]) for a in arns(s)]
        claims = [a for a in puts if "jobs/claims/" in a]
        assert any(prefix in a for a in claims)
        others = [a for a in claims if prefix not in a]
        assert others == [a for a in claims if any(p in a for p in also.get(lid, ()))], (lid, others)
    job = json.dumps(res(t, "JobRole")["Policies"])
    assert "jobs/*/taken*.json" in job  # taken-<i>.json: an array child's work item
