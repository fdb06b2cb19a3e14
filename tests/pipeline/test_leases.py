"""shared/pipeline/leases.py on moto S3: taking, holding, expiring, taking over, finishing, releasing."""
from __future__ import annotations

from datetime import timedelta

import pytest

from shared.pipeline import leases
from shared.pipeline.leases import LeaseLost, acquire, expired, finish, read, record, release

from .conftest import BUCKET
from .test_faults import botocore_stubber, error, gate

KEY = "jobs/claims/ingest/test.json"


def test_first_writer_holds_it_until_it_expires(stack):
    t0 = leases.now_utc()
    mine = acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 60, now=t0)
    assert mine and mine.doc["pair"] == "p" and mine.previous is None
    assert acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 60, now=t0 + timedelta(seconds=59)) is None  # held
    theirs = acquire(stack.s3, BUCKET, KEY, {"pair": "p", "by": "them"}, 60, now=t0 + timedelta(seconds=61))
    assert theirs and theirs.owner != mine.owner and theirs.previous["owner"] == mine.owner
    assert theirs.doc["takeovers"] == 1 and theirs.doc["by"] == "them"
    # the dead holder wakes up (it cannot, in Lambda: the expiry outlives it) and finds it gone
    with pytest.raises(LeaseLost):
        finish(stack.s3, BUCKET, mine)
    # a second taker racing for the same expired lease, with the ETag it read, loses
    assert stack.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"{}", IfMatch=theirs.etag)  # what a winner writes
    with pytest.raises(stack.s3.exceptions.ClientError, match="PreconditionFailed"):
        stack.s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"{}", IfMatch=theirs.etag)


def test_what_the_holder_records_survives_a_takeover_and_a_final_lease_never_expires(stack):
    t0 = leases.now_utc()
    lease = acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 10, now=t0)
    lease = record(stack.s3, BUCKET, lease, state="submitting", manifest="jobs/x/manifest.json")
    taken = acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 10, now=t0 + timedelta(seconds=11))
    assert taken.doc["state"] == "submitting" and taken.doc["manifest"] == "jobs/x/manifest.json"
    done = finish(stack.s3, BUCKET, taken, state="submitted")
    assert done.doc["expires"] is None and not expired(done.doc, t0 + timedelta(days=365))
    assert acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 10, now=t0 + timedelta(days=365)) is None


def test_a_release_lets_the_next_delivery_take_over_at_once(stack):
    lease = acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 600)
    release(stack.s3, BUCKET, lease)
    doc, _ = read(stack.s3, BUCKET, KEY)
    assert expired(doc, leases.now_utc())
    assert acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 600) is not None


def test_the_same_owner_takes_it_again(stack):
    """A retried attempt of the same Batch job takes its manifest again; another job does not."""
    take = "jobs/20261126T120000Z-0a1b2c3d/taken.json"
    assert acquire(stack.s3, BUCKET, take, {}, None, owner="job-1").fresh  # nobody held it before
    again = acquire(stack.s3, BUCKET, take, {}, None, owner="job-1")
    assert again and not again.fresh  # held before, by this owner: what it did may be there
    assert acquire(stack.s3, BUCKET, take, {}, None, owner="job-2") is None


@pytest.mark.parametrize("first", [True, False])
def test_a_write_applied_but_answered_500_is_still_ours(stack, first, monkeypatch):
    """botocore retries the PutObject; the retry meets 412, and the write token says it was ours.
    `first`: the If-None-Match write; otherwise the If-Match takeover."""
    import botocore.retries.standard as standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    t0 = leases.now_utc()
    if not first:
        acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 1, now=t0)
    state = {"n": 0}

    def applied_then_500(request, event_name, **kwargs):
        if event_name.endswith(".PutObject") and state["n"] == 0:
            state["n"] += 1
            botocore_stubber(request=request, event_name=event_name, **kwargs)
            return error(request, 500, "InternalError")
        return None

    gate(stack.s3).append(applied_then_500)
    lease = acquire(stack.s3, BUCKET, KEY, {"pair": "p"}, 60, now=t0 + timedelta(seconds=2))
    assert state["n"] == 1 and lease is not None
    assert read(stack.s3, BUCKET, KEY)[0]["owner"] == lease.owner
    finish(stack.s3, BUCKET, lease)  # and its ETag is the current one
