"""cellpaint/local/moto_speed.py changes moto's time, never its answers: a message past the
queue's retention period is dropped and a fresh one received, as by moto itself."""
from __future__ import annotations

import boto3
from moto import mock_aws


def receive_after(seconds_old: float, monkeypatch) -> list:
    from moto.core import utils
    from moto.sqs import models

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="old")
        now = utils.unix_time() + seconds_old
        monkeypatch.setattr(models, "unix_time", lambda *a: now)
        monkeypatch.setattr(utils, "unix_time", lambda *a: now)
        return [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]


def counts_after_sends(n: int) -> list[str]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        seen = []
        for i in range(n):
            sqs.send_message(QueueUrl=url, MessageBody=str(i))
            seen.append(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"])
        return [a["ApproximateNumberOfMessages"] for a in seen]


def test_answers_are_kept_with_the_speed_up(monkeypatch):
    from cellpaint.local import moto_speed
    from moto.sqs.models import Queue, SQSBackend

    plain = (receive_after(30, monkeypatch), receive_after(90, monkeypatch))
    from moto.s3.models import S3Backend
    from moto.s3.utils import _VersionedKeyStore

    saved = (SQSBackend.is_message_valid_based_on_retention_period, {n: getattr(Queue, n) for n in (*moto_speed.COUNTS, "messages")},
             SQSBackend.get_queue_attributes, (S3Backend.list_object_versions, _VersionedKeyStore.iterlists),
             SQSBackend.delete_message_batch, S3Backend.list_objects_v2,
             {n: _VersionedKeyStore.__dict__.get(n) for n in STORE_METHODS})
    try:
        moto_speed.apply()
        assert SQSBackend.is_message_valid_based_on_retention_period is not saved[0]
        assert (receive_after(30, monkeypatch), receive_after(90, monkeypatch)) == plain == (["old"], [])
        assert counts_after_sends(3) == ["1", "2", "3"]  # the API counts afresh
    finally:
        SQSBackend.is_message_valid_based_on_retention_period = saved[0]
        for name, prop in saved[1].items():
            setattr(Queue, name, prop)
        SQSBackend.get_queue_attributes = saved[2]
        S3Backend.list_object_versions, _VersionedKeyStore.iterlists = saved[3]
        _VersionedKeyStore.lists = saved[3][1]
        SQSBackend.delete_message_batch = saved[4]
        S3Backend.list_objects_v2 = saved[5]
        restore_store(saved[6])


def restore_store(methods: dict) -> None:
    from moto.s3.utils import _VersionedKeyStore

    for name, method in methods.items():
        if method is None:
            delattr(_VersionedKeyStore, name)
        else:
            setattr(_VersionedKeyStore, name, method)


def versions_listing() -> list:
    """Every page of ListObjectVersions over a versioned bucket with two prefixes, re-uploads and a
    deleted key, as a client sees them."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bkt")
        s3.put_bucket_versioning(Bucket="bkt", VersioningConfiguration={"Status": "Enabled"})
        for i in range(7):
            for n in range(1 + i % 3):
                s3.put_object(Bucket="bkt", Key=f"incoming/f/p{i}.png", Body=b"x" * (i + n))
            s3.put_object(Bucket="bkt", Key=f"results/f/p{i}/result.json", Body=b"{}")
        s3.delete_object(Bucket="bkt", Key="incoming/f/p3.png")
        pages = []
        for prefix, delimiter in (("incoming/", ""), ("incoming/f/p1", ""), ("", "/"), ("results/", "")):
            kw = {"Delimiter": delimiter} if delimiter else {}
            for page in s3.get_paginator("list_object_versions").paginate(Bucket="bkt", Prefix=prefix, PaginationConfig={"PageSize": 3}, **kw):
                pages.append([(v["Key"], v["IsLatest"], v["Size"], v["ETag"]) for v in page.get("Versions", [])]
                             + [(m["Key"], m["IsLatest"]) for m in page.get("DeleteMarkers", [])]
                             + [p["Prefix"] for p in page.get("CommonPrefixes", [])])
        import gc

        gc.collect()  # the listing's copies are gone: every version still reads whole
        pages.append([s3.get_object(Bucket="bkt", Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
                      for page in s3.get_paginator("list_object_versions").paginate(Bucket="bkt") for v in page.get("Versions", [])])
        return pages


def test_version_listing_is_unchanged_by_the_speed_up():
    from cellpaint.local import moto_speed
    from moto.s3.models import S3Backend
    from moto.s3.utils import _VersionedKeyStore

    plain = versions_listing()
    saved = (S3Backend.list_object_versions, _VersionedKeyStore.iterlists, _VersionedKeyStore.lists)
    try:
        moto_speed._speed_up_listing()
        assert S3Backend.list_object_versions is not saved[0]
        assert versions_listing() == plain and len(plain) > 6
    finally:
        S3Backend.list_object_versions, _VersionedKeyStore.iterlists, _VersionedKeyStore.lists = saved


def batch_deletes() -> list:
    """DeleteMessageBatch's answers: current handles, an old handle of a message
    received again, a made-up handle, and what is left in the queue."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
        for i in range(15):
            sqs.send_message(QueueUrl=url, MessageBody=str(i))
        first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        again = {m["MessageId"]: m for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]}
        old = next(m for m in first if m["MessageId"] in again)
        entries = [{"Id": f"e{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(list(again.values())[:3])]
        entries += [{"Id": "old", "ReceiptHandle": old["ReceiptHandle"]},
                    {"Id": "made-up", "ReceiptHandle": "nonsense"}]
        got = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        left = sorted(m["Body"] for _ in range(3) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []))
        return [sorted(s["Id"] for s in got.get("Successful", [])), [(f["Id"], f["Code"]) for f in got.get("Failed", [])],
                len(set(left))]


def test_batch_deletes_answer_as_moto_does():
    from cellpaint.local import moto_speed
    from moto.sqs.models import SQSBackend

    plain = batch_deletes()
    saved = SQSBackend.delete_message_batch
    try:
        moto_speed._speed_up_deletes()
        assert SQSBackend.delete_message_batch is not saved
        assert batch_deletes() == plain and plain[1] == [("made-up", "ReceiptHandleIsInvalid")]
    finally:
        SQSBackend.delete_message_batch = saved


STORE_METHODS = ("__setitem__", "setlist", "pop", "__delitem__", "clear", "update", "setdefault", "popitem")


def key_listing() -> list:
    """Every page of ListObjectsV2 as a client sees them: prefixes, folders, StartAfter, pages of 3,
    a deleted key (a delete marker), a key whose every version was deleted, and keys added between
    one page and the next."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bkt")
        s3.put_bucket_versioning(Bucket="bkt", VersioningConfiguration={"Status": "Enabled"})
        keys = [f"incoming/f{i % 3}/p{i}.png" for i in range(12)] + ["incoming/a-b.png", "incoming/f1/", "incoming/f1/sub/x.png",
                                                                      "incoming/é.png", "results/f0/p0/result.json", "top.txt"]
        for k in keys:
            s3.put_object(Bucket="bkt", Key=k, Body=b"x")
        s3.put_object(Bucket="bkt", Key="incoming/f0/p0.png", Body=b"again")
        s3.delete_object(Bucket="bkt", Key="incoming/f0/p3.png")
        for v in s3.list_object_versions(Bucket="bkt", Prefix="incoming/f2/p5.png")["Versions"]:
            s3.delete_object(Bucket="bkt", Key="incoming/f2/p5.png", VersionId=v["VersionId"])
        pages = []
        for prefix, delimiter, after in (("incoming/", "", ""), ("incoming/", "/", ""), ("", "/", ""), ("incoming/f1", "", ""),
                                         ("incoming/f", "/", "incoming/f0/"), ("incoming/", "", "incoming/f1/p4.png"), ("nothing/", "", "")):
            kw = {k: v for k, v in (("Delimiter", delimiter), ("StartAfter", after)) if v}
            for n, page in enumerate(s3.get_paginator("list_objects_v2").paginate(Bucket="bkt", Prefix=prefix, PaginationConfig={"PageSize": 3}, **kw)):
                pages.append([(o["Key"], o["Size"], o["ETag"]) for o in page.get("Contents", [])]
                             + [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [page["KeyCount"], page["IsTruncated"]])
                if n == 1 and prefix == "incoming/" and not delimiter:  # written while the listing goes on
                    s3.put_object(Bucket="bkt", Key="incoming/zz.png", Body=b"late")
                    s3.put_object(Bucket="bkt", Key="incoming/0.png", Body=b"early")
        pages.append(s3.list_objects_v2(Bucket="bkt", Prefix="incoming/", MaxKeys=0)["KeyCount"])
        return pages


def test_key_listing_is_unchanged_by_the_speed_up():
    from cellpaint.local import moto_speed
    from moto.s3.models import S3Backend
    from moto.s3.utils import _VersionedKeyStore

    plain = key_listing()
    saved = S3Backend.list_objects_v2, {n: _VersionedKeyStore.__dict__.get(n) for n in STORE_METHODS}
    try:
        moto_speed._speed_up_key_listing()
        assert S3Backend.list_objects_v2 is not saved[0]
        fast = key_listing()
        assert fast == plain and len(plain) > 15
        seen = [x if isinstance(x, str) else x[0] for page in plain[:-1] for x in page[:-2]]
        assert {"incoming/f0/", "incoming/f1/", "incoming/zz.png"} <= set(seen) and "incoming/f0/p3.png" not in seen
    finally:
        S3Backend.list_objects_v2 = saved[0]
        restore_store(saved[1])


def receives() -> list:
    """What ReceiveMessage answers on a queue with messages in flight, delayed and visible."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
        for i in range(30):
            sqs.send_message(QueueUrl=url, MessageBody=str(i), **({"DelaySeconds": 60} if i % 7 == 3 else {}))
        got = [sorted(m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=n).get("Messages", []))
               for n in (1, 10, 4, 10, 10)]
        count = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        return got + [count["ApproximateNumberOfMessages"]]


def test_receives_answer_as_moto_does():
    from cellpaint.local import moto_speed
    from moto.sqs.models import Queue

    saved = Queue.messages
    Queue.messages = getattr(saved.fget, "plain", saved)  # moto's own, should another test have left the speed-up on
    try:
        plain = receives()
        moto_speed._speed_up_receives()
        assert Queue.messages.fget.lazy and receives() == plain
        assert [len(b) for b in plain[:-1]] == [1, 10, 4, 10, 1] and plain[-1] == "0"  # 4 delayed, the rest in flight
    finally:
        Queue.messages = saved
