"""Labs as tenants, with the policies evaluated (moto enforcing IAM): lab A's uploader writes only
incoming/A/ (and adapt/A/), reads only its own results, and writes nothing of the pipeline's.
moto does not substitute ${aws:PrincipalTag/lab}: the template's uploader policy is rendered for
each lab the way IAM would render it for a principal tagged lab=<lab>."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from cfnlint.decode import cfn_yaml
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "tenants-bucket"


def uploader_policy(lab: str) -> dict:
    """The template's UploaderPolicy document as IAM applies it to a principal tagged lab=<lab>."""
    doc = cfn_yaml.load(str(ROOT / "template.yaml"))["Resources"]["UploaderPolicy"]["Properties"]["PolicyDocument"]

    def render(v):
        if isinstance(v, dict) and "Fn::Sub" in v:
            return v["Fn::Sub"].replace("${Bucket.Arn}", f"arn:aws:s3:::{BUCKET}").replace("${!aws:PrincipalTag/lab}", lab)
        if isinstance(v, dict) and "Fn::GetAtt" in v:
            return f"arn:aws:s3:::{BUCKET}"
        if isinstance(v, dict):
            return {k: render(x) for k, x in v.items()}
        if isinstance(v, list):
            return [render(x) for x in v]
        return v.replace("${aws:PrincipalTag/lab}", lab) if isinstance(v, str) else v

    return render(json.loads(json.dumps(doc)))


def denied(call) -> bool:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


@set_initial_no_auth_action_count(3)  # the admin's user, policy and key; every request after them is checked
@mock_aws
def test_a_labs_uploader_reaches_only_its_own_lab(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    iam = boto3.client("iam", aws_access_key_id="x", aws_secret_access_key="x")
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    admin = boto3.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    a_iam, s3 = admin.client("iam"), admin.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="results/labB/cell/inpainted.png", Body=b"B's result")
    s3.put_object(Bucket=BUCKET, Key="results/labA/cell/inpainted.png", Body=b"A's result")
    clients = {}
    for lab in ("labA", "labB"):
        a_iam.create_user(UserName=f"{lab}-uploader", Tags=[{"Key": "lab", "Value": lab}])
        a_iam.put_user_policy(UserName=f"{lab}-uploader", PolicyName="uploader", PolicyDocument=json.dumps(uploader_policy(lab)))
        k = a_iam.create_access_key(UserName=f"{lab}-uploader")["AccessKey"]
        clients[lab] = boto3.client("s3", aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"])
    a = clients["labA"]
    a.put_object(Bucket=BUCKET, Key="incoming/labA/day1/cell.png", Body=b"png")  # its own lab: allowed
    a.put_object(Bucket=BUCKET, Key="adapt/labA/fields/1.jpg", Body=b"jpg")
    assert a.get_object(Bucket=BUCKET, Key="results/labA/cell/inpainted.png")["Body"].read() == b"A's result"
    assert denied(lambda: a.get_object(Bucket=BUCKET, Key="results/labB/cell/inpainted.png"))  # not another lab's results
    assert denied(lambda: a.put_object(Bucket=BUCKET, Key="incoming/labB/cell.png", Body=b"x"))  # nor its uploads
    for key in ("results/labA/cell/result.json", "jobs/claims/ingest/x.json", "models/labA/weights.safetensors", "failed/labA/x/error.json"):
        assert denied(lambda key=key: a.put_object(Bucket=BUCKET, Key=key, Body=b"{}")), key  # nothing of the pipeline's


def test_the_bucket_lets_only_the_pipeline_write_its_outputs():
    doc = cfn_yaml.load(str(ROOT / "template.yaml"))["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]
    [deny] = [s for s in doc["Statement"] if s["Sid"] == "OnlyThePipelineWritesItsOutputs"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "s3:PutObject"
    writers = {x["Fn::GetAtt"][0] for x in deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]}
    res = cfn_yaml.load(str(ROOT / "template.yaml"))["Resources"]
    # every role that writes under results/, failed/, jobs/ or models/ is one of the pipeline's, and is let through
    for lid, r in res.items():
        if r["Type"] == "AWS::IAM::Role" and lid != "TrainJobRole":
            text = json.dumps(r["Properties"].get("Policies", []))
            if any(p in text for p in ("/results/", "/failed/", "/jobs/", "/models/")) and "s3:PutObject" in text:
                assert lid in writers, lid
