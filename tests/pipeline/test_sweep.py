"""The sweeper (functions/sweep/app.py): what no event reports, reported once each through
failed/<pair>/error.json and the usual failure notification."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.options import InpaintOptions

from .conftest import (BUCKET, Context, Crash, batch_jobs, crash_on, handoffs, good_pair, inbox, keys, later, load_handler,
                       notify_outputs, upload)

DAY, HOUR = 86400, 3600


@pytest.fixture
def sweeper(stack):
    return load_handler("sweep")


def sweep_and_notify(stack, sweeper) -> list[dict]:
    """One scheduled sweep, then the notify function on what it wrote: the messages sent."""
    sweeper.lambda_handler({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, Context())
    assert notify_outputs(stack) == {"batchItemFailures": []}
    return [json.loads(m["text"]) for m in inbox(stack)]


def error_doc(stack, pair: str) -> dict:
    return json.loads(stack.s3.get_object(Bucket=BUCKET, Key=f"failed/{pair}/error.json")["Body"].read())


def test_a_half_uploaded_pair_is_reported_once_after_a_day(stack, sweeper, monkeypatch):
    image, mask = good_pair()
    stack.ingest.lambda_handler(upload(stack, "incoming/half.png", image), Context())  # waits for its mask
    stack.ingest.lambda_handler(upload(stack, "incoming/lone.mask.png", mask), Context())  # waits for its image
    assert sweep_and_notify(stack, sweeper) == []  # too early: a mask may still come
    later(monkeypatch, DAY + HOUR)
    got = {m["pair"]: m for m in sweep_and_notify(stack, sweeper)}
    assert set(got) == {"half", "lone"} and all(m["status"] == "failed" for m in got.values())
    assert "its mask incoming/half.mask.png has not arrived in 24 h" in got["half"]["reason"]
    assert "its image has not arrived in 24 h" in got["lone"]["reason"]
    assert error_doc(stack, "half")["stage"] == "sweep" and error_doc(stack, "half")["keys"] == {"image": "incoming/half.png"}
    assert sweep_and_notify(stack, sweeper) == []  # the next sweep: reported already
    # the mask comes after all: the pair runs as usual
    stack.ingest.lambda_handler(upload(stack, "incoming/half.mask.png", mask), Context())
    assert len(batch_jobs(stack)) == 1


def test_a_sidecar_after_its_pair_is_reported_once(stack, sweeper, monkeypatch):
    image, mask = good_pair()
    upload(stack, "incoming/s.png", image)
    stack.ingest.lambda_handler(upload(stack, "incoming/s.mask.png", mask), Context())
    upload(stack, "incoming/s.json", b'{"steps": 25}')  # too late: the pair was submitted without it
    upload(stack, "incoming/t.json", b'{"steps": 10}')
    upload(stack, "incoming/t.png", image)
    stack.ingest.lambda_handler(upload(stack, "incoming/t.mask.png", mask), Context())  # in time: used
    upload(stack, "incoming/u.png", image)
    stack.ingest.lambda_handler(upload(stack, "incoming/u.mask.png", mask), Context())
    upload(stack, "incoming/u.json", b'{"steps": 5000}')  # late, and bad too
    got = {m["pair"]: m for m in sweep_and_notify(stack, sweeper)}
    assert set(got) == {"s", "u"}
    assert got["s"]["reason"] == ("incoming/s.json: these options arrived after the pair had been submitted without options, "
                                  "so they were not used; upload the image or the mask again to restore the pair with them")
    assert "fix them first" in got["u"]["reason"] and "from 1 to 1000" in got["u"]["reason"]
    assert sweep_and_notify(stack, sweeper) == []
    # uploading the mask again runs the pair with the options (after the settle that waits for a new
    # image), and they are not late for that run
    again = upload(stack, "incoming/s.mask.png", mask)
    stack.ingest.lambda_handler(again, Context())
    later(monkeypatch, 61)
    stack.ingest.lambda_handler(again, Context())
    [_, _, _, last] = handoffs(stack)
    manifest = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=last)["Body"].read())
    assert manifest["pairs"][0]["options"] == InpaintOptions(steps=25).to_dict()
    assert sweep_and_notify(stack, sweeper) == []


def test_a_lease_abandoned_without_a_job_is_reported_once(stack, sweeper, monkeypatch):
    """The ingest function dies on the pair every time, and its message ends in the dead-letter
    queue: the lease expires and nobody comes back. The sweeper reports it, and takes the lease,
    so a delivery that does come back later finds it done."""
    image, mask = good_pair()
    upload(stack, "incoming/dead.png", image)
    ev = upload(stack, "incoming/dead.mask.png", mask)
    # dies once the lease is held (recording the pairing), every time
    crash_on(stack.ingest.S3, "PutObject", lambda p: p["Key"].startswith("jobs/claims/ingest-names/") and b'"pairing"' in p["Body"])
    with pytest.raises(Crash):
        stack.ingest.lambda_handler(ev, Context())
    later(monkeypatch, HOUR)  # expired, but a redelivery may still come
    assert sweep_and_notify(stack, sweeper) == []
    later(monkeypatch, 4 * HOUR)  # past LEASE_GRACE_SECONDS (3 h) after the expiry
    [msg] = sweep_and_notify(stack, sweeper)
    assert msg["pair"] == "dead" and "no GPU job ever started for it" in msg["reason"] and "stopped 1 time " in msg["reason"]
    assert sweep_and_notify(stack, sweeper) == []
    assert stack.ingest.lambda_handler(ev, Context()) == {"batchItemFailures": []}  # the late redelivery
    assert batch_jobs(stack) == []


def test_an_expired_submitting_lease_whose_manifest_a_job_took_is_not_reported(stack, sweeper, inpainter, monkeypatch):
    """Ingest died right after SubmitJob: the job ran, the lease still says "submitting". The
    sweeper sees the job took the manifest, closes the lease, and says nothing."""
    from .conftest import run_jobs

    image, mask = good_pair()
    upload(stack, "incoming/ok.png", image)
    ev = upload(stack, "incoming/ok.mask.png", mask)
    crash_on(stack.ingest.BATCH, "SubmitJob", after=True)
    with pytest.raises(Crash):
        stack.ingest.lambda_handler(ev, Context())
    assert [s["ok"] for s in run_jobs(stack, inpainter)] == ["succeeded"]
    later(monkeypatch, 5 * HOUR)
    messages = sweep_and_notify(stack, sweeper)
    assert [(m["pair"], m["status"]) for m in messages] == [("ok", "succeeded")]  # the result's own notification only
    [lease] = keys(stack, "jobs/claims/ingest/")
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=lease)["Body"].read())
    assert doc["state"] == "submitted" and doc["batch_job_id"] == batch_jobs(stack)[0]["jobId"]


class MillionObjects:
    """stack.s3, except that list_object_versions under incoming/ answers from a generated bucket of
    `pairs` pairs (an image and a mask each: 2 x pairs objects, 1000 a page) where the pairs in `halves`
    have no mask. Each page advances the clock by `page_s`, as a real LIST call takes time."""

    def __init__(self, s3, pairs: int, halves: set[int], page_s: float, modified):
        self.s3, self.pairs, self.halves, self.page_s, self.modified = s3, pairs, halves, page_s, modified
        self.clock, self.pages = 0.0, 0

    def __getattr__(self, name):
        return getattr(self.s3, name)

    def get_paginator(self, op):
        return self if op == "list_object_versions" else self.s3.get_paginator(op)

    def _keys(self, after: str | None):
        first = int(after.split("/c")[1][:7]) if after else 0
        for i in range(first, self.pairs):
            for key in ([] if i in self.halves else [f"incoming/big/c{i:07d}.mask.png"]) + [f"incoming/big/c{i:07d}.png"]:
                if after is None or key > after:
                    yield key

    def paginate(self, Bucket, Prefix, KeyMarker=None):
        page = []
        for key in self._keys(KeyMarker):
            page.append({"Key": key, "VersionId": "v1", "IsLatest": True, "ETag": '"e"', "Size": 1, "LastModified": self.modified})
            if len(page) == 1000:
                yield from self._page(page)
                page = []
        if page:
            yield from self._page(page)

    def _page(self, versions):
        self.clock += self.page_s
        self.pages += 1
        yield {"Versions": versions}


def test_the_sweeper_reports_within_its_time_at_a_million_objects(stack):
    from shared.pipeline import sweep
    from shared.pipeline.leases import now_utc

    then = now_utc()
    halves = {50_000 + 100_000 * k for k in range(5)}  # five images whose masks never came, spread through the listing
    big = MillionObjects(stack.s3, 500_000, halves, page_s=1.0, modified=then)  # 1,000 pages at 1 s: over the 240 s it has
    reported, sweeps = [], 0
    while True:
        sweeps += 1
        start = big.clock
        found = sweep.sweep(big, BUCKET, now=then + timedelta(days=2), out_of_time=lambda: big.clock - start > 240)
        assert big.clock - start <= 241  # it stopped in time, and reported what it had found so far
        reported += [f.pair for f in found if f.error_key]
        if not json.loads(stack.s3.get_object(Bucket=BUCKET, Key=sweep.CURSOR)["Body"].read()).get("incoming"):
            break
        assert sweeps < 10
    assert sweeps == 5 and big.pages <= 1000 + 5 * 2  # each sweep re-lists at most the page it stopped in
    assert sorted(reported) == sorted(f"big/c{i:07d}" for i in halves)  # each once, none lost between sweeps
    assert len(keys(stack, "failed/big/")) == 5
    # a bucket listed within the time: one sweep, and the next one starts over
    fast = MillionObjects(stack.s3, 50_000, {7}, page_s=2.0, modified=then)
    found = sweep.sweep(fast, BUCKET, now=then + timedelta(days=2), out_of_time=lambda: fast.clock > 240)
    assert [f.pair for f in found if f.error_key] == ["big/c0000007"] and fast.pages == 100
    assert json.loads(stack.s3.get_object(Bucket=BUCKET, Key=sweep.CURSOR)["Body"].read()).keys() == {"saved"}
