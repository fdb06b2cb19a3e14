"""Every kind of bad upload gets failed/<pair>/error.json and a notification; the upload stays as
it was. Unusual but valid files (16-bit, CMYK, multi-picture JPEG, APNG, palette, EXIF) are accepted."""
from __future__ import annotations

import json

import pytest

from .conftest import BUCKET, Context, inbox, keys, notify_outputs, upload
from .inputs import BAD, GOOD, ODD_KEYS


def test_the_corpus_has_at_least_15_kinds():
    assert len(BAD) + len(ODD_KEYS) >= 15


def _upload_all(stack, pair, files):
    # the documented order: the options first, as they apply when the second half arrives
    for suffix, data in sorted(files.items(), key=lambda kv: kv[0] != ".json"):
        assert stack.ingest.lambda_handler(upload(stack, f"incoming/{pair}{suffix}", data), Context()) == {"batchItemFailures": []}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_pair(stack, kind, monkeypatch):
    files, word = BAD[kind]
    if kind == "too-many-bytes":
        monkeypatch.setattr(stack.ingest, "LIMITS", type(stack.ingest.LIMITS)(max_bytes=100_000))
    pair = f"bad/{kind}"
    _upload_all(stack, pair, files)
    assert stack.submits == [], "a bad pair must not reach the GPU"
    assert keys(stack, "failed/") == [f"failed/{pair}/error.json"]
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=f"failed/{pair}/error.json")["Body"].read())
    assert doc["status"] == "failed" and doc["pair"] == pair and word in doc["reason"], doc["reason"]
    for suffix, data in files.items():  # the upload is intact: one version, the same bytes
        key = f"incoming/{pair}{suffix}"
        assert len(stack.s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]) == 1
        assert stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert notify_outputs(stack) == {"batchItemFailures": []}
    [msg] = inbox(stack)
    body = json.loads(msg["text"])  # the queue subscriber gets the webhook's JSON body
    assert body["status"] == "failed" and body["pair"] == pair and body["reason"] == doc["reason"]
    assert word in body["reason"] and msg["subject"].startswith("cellpaint: ")
    # redelivering every event reports nothing twice
    notify_outputs(stack)
    assert inbox(stack) == []


@pytest.mark.parametrize("key", sorted(ODD_KEYS))
def test_odd_key(stack, key):
    stack.s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    from .conftest import s3_body, sqs_event
    for _ in range(2):  # a duplicate delivery reports once
        assert stack.ingest.lambda_handler(sqs_event(s3_body(key)), Context()) == {"batchItemFailures": []}
    [err] = keys(stack, "failed/")
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=err)["Body"].read())
    assert ODD_KEYS[key] in doc["reason"] and doc["keys"]["upload"] == key
    assert stack.submits == []
    notify_outputs(stack)
    assert len(inbox(stack)) == 1


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_unusual_but_valid_pair(stack, kind):
    _upload_all(stack, f"good/{kind}", GOOD[kind])
    assert keys(stack, "failed/") == [], stack.s3.get_object(Bucket=BUCKET, Key=keys(stack, "failed/")[0])["Body"].read() if keys(stack, "failed/") else ""
    assert len(stack.submits) == 1
    [m] = [k for k in keys(stack, "jobs/") if k.endswith("manifest.json")]
    [pair] = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=m)["Body"].read())["pairs"]
    expect = (64, 48) if kind == "both-exif-rotated" else (48, 64)  # EXIF orientation applied
    assert (pair["height"], pair["width"]) == expect
