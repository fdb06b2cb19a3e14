"""The ingest handler on the events the stack delivers: pairs, duplicates, races, skips."""
from __future__ import annotations

import io
import json
import threading

import numpy as np
from PIL import Image

from shared.options import InpaintOptions
from shared.pipeline.manifest import read_manifest

from .conftest import BUCKET, Context, encode, good_pair, handoffs, keys, load_event, s3_body, sqs_event, upload


def manifests(st):
    return [k for k in keys(st, "jobs/") if k.endswith("/manifest.json")]


def upload_pairs(st, folder: str, n: int) -> list[dict]:
    """n good pairs under incoming/<folder>/ (0..n-1): the S3 event records of all their halves."""
    image, mask = good_pair()
    return [r for i in range(n) for name, data in ((f"{i}.png", image), (f"{i}.mask.png", mask))
            for r in upload(st, f"incoming/{folder}/{name}", data)["Records"]]


def test_event_files_parse(stack):
    ev = load_event("sqs-s3-object-created.json")
    assert stack.ingest.lambda_handler(ev, Context()) == {"batchItemFailures": []}  # no such object: waits
    assert stack.submits == [] and keys(stack, "failed/") == []


def test_test_event_is_skipped(stack):
    assert stack.ingest.lambda_handler(load_event("sqs-s3-test-event.json"), Context()) == {"batchItemFailures": []}
    assert keys(stack, "") == []


def test_image_first_then_mask(stack):
    image, mask = good_pair()
    assert stack.ingest.lambda_handler(upload(stack, "incoming/demo/cell 1.png", image), Context()) == {"batchItemFailures": []}
    assert stack.submits == []  # waiting for the mask
    stack.ingest.lambda_handler(upload(stack, "incoming/demo/cell 1.mask.png", mask), Context())
    assert len(stack.submits) == 1
    [key] = manifests(stack)
    assert stack.submits[0]["parameters"] == {"manifest": f"s3://{BUCKET}/{key}"}
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    [pair] = doc["pairs"]
    assert pair["pair"] == "demo/cell 1" and pair["image_key"] == "incoming/demo/cell 1.png"
    assert (pair["height"], pair["width"]) == (48, 64) and len(pair["windows"]) == 1
    assert pair["image_version"] and pair["mask_version"]
    from shared.pipeline.manifest import read_manifest, window_from_dict
    [job] = read_manifest(doc)
    w = window_from_dict(job.windows[0])
    assert w.prep.image.shape == (64, 64, 3) and w.prep.mask.any()


def test_mask_first_then_image_with_sidecar(stack):
    image, mask = good_pair()
    stack.ingest.lambda_handler(upload(stack, "incoming/a.json", b'{"steps": 20, "seed": 3, "label": "monocyte"}'), Context())
    stack.ingest.lambda_handler(upload(stack, "incoming/a.mask.png", mask), Context())
    assert stack.submits == []
    stack.ingest.lambda_handler(upload(stack, "incoming/a.JPG", image), Context())
    assert len(stack.submits) == 1
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifests(stack)[0])["Body"].read())
    assert doc["pairs"][0]["options"] == InpaintOptions(steps=20, seed=3, label="monocyte").to_dict()
    assert doc["pairs"][0]["image_key"] == "incoming/a.JPG"


def test_same_event_ten_times_gives_one_job(stack):
    image, mask = good_pair()
    upload(stack, "incoming/p.png", image)
    event = upload(stack, "incoming/p.mask.png", mask)
    for _ in range(10):
        assert stack.ingest.lambda_handler(event, Context()) == {"batchItemFailures": []}
    assert len(stack.submits) == 1 and len(manifests(stack)) == 1


def test_duplicates_in_one_batch_give_one_pair(stack):
    image, mask = good_pair()
    a = upload(stack, "incoming/p.png", image)["Records"][0]
    b = upload(stack, "incoming/p.mask.png", mask)["Records"][0]
    stack.ingest.lambda_handler({"Records": [a, b, a, b]}, Context())
    assert len(stack.submits) == 1
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifests(stack)[0])["Body"].read())
    assert [p["pair"] for p in doc["pairs"]] == ["p"]


def test_many_pairs_in_one_invocation_give_one_job(stack):
    assert stack.ingest.lambda_handler({"Records": upload_pairs(stack, "batch", 5)}, Context()) == {"batchItemFailures": []}
    assert len(stack.submits) == 1
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifests(stack)[0])["Body"].read())
    assert sorted(p["pair"] for p in doc["pairs"]) == [f"batch/{i}" for i in range(5)]


def test_one_invocation_lists_each_folder_once_and_reads_each_pair_once(stack):
    """Listing per event made a folder of N pairs N² work; the other half's event only met the lease."""
    records = upload_pairs(stack, "day1", 12) + upload_pairs(stack, "day2", 3)
    calls = []
    stack.ingest.S3.meta.events.register("before-parameter-build.s3", lambda model, params, **kw: calls.append((model.name, params.get("Key"))))
    stack.ingest.lambda_handler({"Records": records}, Context())
    assert [c for c in calls if c[0] == "ListObjectsV2"] == [("ListObjectsV2", None)] * 2
    images = [k for name, k in calls if name == "GetObject" and k.startswith("incoming/")]
    assert len(images) == 30 and len(set(images)) == 30  # each half downloaded once
    assert not [k for name, k in calls if name == "HeadObject" and k.startswith("incoming/")]  # and not looked at before
    assert not [k for name, k in calls if name == "GetObject" and k.startswith("jobs/claims/")]  # new NAMEs: no pairing to read
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifests(stack)[0])["Body"].read())
    assert len(stack.submits) == 1 and len(doc["pairs"]) == 15
    # a half uploaded after the invocation has its own event, which lists again
    image, mask = good_pair()
    upload(stack, "incoming/day1/late.png", image)
    stack.ingest.lambda_handler(upload(stack, "incoming/day1/late.mask.png", mask), Context())
    assert len(handoffs(stack)) == 2


def test_an_invocation_lists_only_the_key_range_of_its_own_pairs(stack):
    """A 10,000-pair folder listed whole per invocation of 100 events was N² again: an invocation
    reads its own pairs' range, and NAMEs that sort oddly ('a' is not next to 'a.png' when 'a-b'
    and 'a.b' are there) are all found."""
    image, mask = good_pair()
    for i in range(200):  # earlier uploads of the folder, already answered
        for name, data in ((f"old{i:03d}.png", image), (f"old{i:03d}.mask.png", mask)):
            stack.s3.put_object(Bucket=BUCKET, Key=f"incoming/day1/{name}", Body=data)
    names = ["a", "a-b", "a.b", "a b", "ab"]
    records = [r for n in names for key, data in ((f"incoming/day1/{n}.png", image), (f"incoming/day1/{n}.mask.png", mask))
               for r in upload(stack, key, data)["Records"]]
    listed = []
    stack.ingest.S3.meta.events.register("after-call.s3.ListObjectsV2",
                                         lambda parsed, **kw: listed.extend(o["Key"] for o in parsed.get("Contents", [])))
    heads = []
    stack.ingest.S3.meta.events.register("before-parameter-build.s3.HeadObject", lambda params, **kw: heads.append(params["Key"]))
    assert stack.ingest.lambda_handler({"Records": records}, Context()) == {"batchItemFailures": []}
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifests(stack)[0])["Body"].read())
    assert sorted(p["pair"] for p in doc["pairs"]) == sorted(f"day1/{n}" for n in names)
    assert len([k for k in listed if "/old" in k]) <= 25  # of the 400 outside the range, at most the rest of a page
    assert len([k for k in heads if k.startswith("models/")]) == 1  # the lab's model is looked for once, not per pair


def test_two_halves_racing_on_threads_give_one_job(stack):
    image, mask = good_pair()
    events = [upload(stack, "incoming/race.png", image), upload(stack, "incoming/race.mask.png", mask)] * 4
    barrier = threading.Barrier(len(events))
    errors = []

    def run(ev):
        barrier.wait()
        try:
            stack.ingest.lambda_handler(ev, Context())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ev,)) for ev in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stack.submits) == 1 and len(manifests(stack)) == 1


def test_reupload_is_a_new_job(stack, monkeypatch):
    from .conftest import later

    image, mask = good_pair()
    upload(stack, "incoming/r.png", image)
    stack.ingest.lambda_handler(upload(stack, "incoming/r.mask.png", mask), Context())
    again = upload(stack, "incoming/r.mask.png", mask)  # a new version of one half: its job comes after the settle
    stack.ingest.lambda_handler(again, Context())
    later(monkeypatch, 61)
    stack.ingest.lambda_handler(again, Context())  # the event, delayed on the queue
    assert len(handoffs(stack)) == 2


def test_writes_outside_incoming_never_trigger(stack):
    image, mask = good_pair()
    for key in ("results/p/inpainted.png", "results/p/result.json", "jobs/x/manifest.json", "failed/p/error.json",
                "incoming/", "incoming/folder/", "incoming/.DS_Store", "incomingx/p.png"):
        stack.s3.put_object(Bucket=BUCKET, Key=key, Body=image)
        assert stack.ingest.lambda_handler(sqs_event(s3_body(key)), Context()) == {"batchItemFailures": []}
    assert stack.submits == [] and keys(stack, "failed/") == ["failed/p/error.json"]


def test_event_for_another_bucket_is_ignored(stack):
    stack.s3.put_object(Bucket=BUCKET, Key="incoming/p.png", Body=good_pair()[0])
    stack.ingest.lambda_handler(sqs_event(s3_body("incoming/p.png", bucket="someone-else")), Context())
    assert keys(stack, "jobs/") == []


def test_uploads_are_never_changed(stack):
    image, mask = good_pair()
    upload(stack, "incoming/k.png", image)
    stack.ingest.lambda_handler(upload(stack, "incoming/k.mask.png", mask), Context())
    for key, data in (("incoming/k.png", image), ("incoming/k.mask.png", mask)):
        versions = stack.s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
        assert len(versions) == 1
        assert stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_names_that_differ_only_in_case_or_unicode_form_are_refused_by_name(stack):
    image, mask = good_pair()
    stack.ingest.lambda_handler(upload(stack, "incoming/lab1/cell.png", image), Context())
    stack.ingest.lambda_handler(upload(stack, "incoming/lab1/Cell.mask.png", mask), Context())  # would never pair
    err = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="failed/lab1/Cell/error.json")["Body"].read())
    assert "incoming/lab1/cell.png" in err["reason"] and "only in case or Unicode form" in err["reason"]
    nfc, nfd = "caf\u00e9", "cafe\u0301"  # one name, typed two ways
    stack.ingest.lambda_handler(upload(stack, f"incoming/{nfc}.png", image), Context())
    stack.ingest.lambda_handler(upload(stack, f"incoming/{nfd}.mask.png", mask), Context())
    assert any(k.startswith("failed/") for k in keys(stack, "failed/") if "caf" in k)
    assert stack.submits == []  # neither ran against the wrong half


def test_a_near_name_is_accepted_once_the_first_name_is_gone(stack):
    """The first NAME of a canonical form is remembered, not forever: once the user deletes the
    misnamed upload and uploads it again under the right NAME, the pair runs."""
    image, mask = good_pair()
    stack.ingest.lambda_handler(upload(stack, "incoming/lab1/cell.png", image), Context())
    stack.ingest.lambda_handler(upload(stack, "incoming/lab1/Cell.mask.png", mask), Context())
    assert keys(stack, "failed/") == ["failed/lab1/Cell/error.json"] and stack.submits == []
    stack.s3.delete_object(Bucket=BUCKET, Key="incoming/lab1/cell.png")  # a delete marker; the version stays
    stack.ingest.lambda_handler(upload(stack, "incoming/lab1/Cell.png", image), Context())
    assert len(handoffs(stack)) == 1
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=handoffs(stack)[0])["Body"].read())
    assert [p["pair"] for p in doc["pairs"]] == ["lab1/Cell"]


def test_a_pair_that_would_hold_a_job_too_long_is_refused_naming_the_limit(stack):
    """No job that cannot finish: a pair's cost (steps x samples x windows, the texture stage's tiles
    included) is bounded at ingest, and the job's time limit follows what its manifest holds."""
    from shared.pipeline.ingest import ingest_object
    from shared.pipeline.manifest import DRAIN_S, time_limit
    from shared.pipeline.validate import Limits

    image, mask = good_pair()
    upload(stack, "incoming/slow.json", b'{"steps": 1000, "samples": 8}')
    upload(stack, "incoming/slow.png", image)
    upload(stack, "incoming/slow.mask.png", mask)
    out = ingest_object(stack.s3, BUCKET, "incoming/slow.mask.png", limits=Limits(max_evaluations=5_000))
    assert out.status == "failed"
    assert "8,0" in out.detail and "1 window(s) x 8 sample(s) x 1000 steps" in out.detail and "at most 5,000" in out.detail
    err = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="failed/slow/error.json")["Body"].read())
    assert "lower steps or samples" in err["reason"] and "incoming/slow.mask.png" in err["reason"]
    # a default pair goes through, and its job's time limit is its manifest's
    stack.ingest.lambda_handler(upload(stack, "incoming/quick.png", image), Context())
    stack.ingest.lambda_handler(upload(stack, "incoming/quick.mask.png", mask), Context())
    [submit] = stack.submits
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifests(stack)[0])["Body"].read())
    [pair] = read_manifest(doc)
    assert pair.evaluations == 5 + -(-int((np.asarray(Image.open(io.BytesIO(mask))) > 127).sum()) // 64**2)
    assert submit["timeout"] == {"attemptDurationSeconds": time_limit([pair]) + DRAIN_S}


def test_a_folder_larger_than_a_work_item_is_one_array_job(stack, inpainter, monkeypatch):
    """Work items sized by estimated work, run as the children of one array job: one SubmitJob,
    every pair answered exactly once (also when a child runs twice), and a failed child speaks for
    its own work item only."""
    from shared.pipeline import manifest as manifest_mod
    from shared.pipeline import notify

    from .conftest import run_jobs

    monkeypatch.setattr(manifest_mod, "ITEM_S", 5.0)  # each default pair is estimated at 2 s + its evaluations: 2 pairs an item
    assert stack.ingest.lambda_handler({"Records": upload_pairs(stack, "day", 5)}, Context()) == {"batchItemFailures": []}
    [submit] = stack.submits
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=manifests(stack)[0])["Body"].read())
    assert doc["items"] == [[0, 2], [2, 4], [4, 5]] and submit["arrayProperties"] == {"size": 3}
    assert submit["timeout"]["attemptDurationSeconds"] == manifest_mod.DRAIN_S + max(
        manifest_mod.time_limit(read_manifest(doc)[a:b]) for a, b in doc["items"])
    statuses = run_jobs(stack, inpainter)
    assert [sorted(s) for s in statuses] == [["day/0", "day/1"], ["day/2", "day/3"], ["day/4"]]
    assert all(v == "succeeded" for s in statuses for v in s.values())
    assert len([k for k in keys(stack, "results/day/") if k.endswith("result.json")]) == 5
    assert sorted(k.rsplit("/", 1)[1] for k in keys(stack, "jobs/") if "/taken" in k) == ["taken-0.json", "taken-1.json", "taken-2.json"]
    assert all(v == "skipped" for s in run_jobs(stack, inpainter) for v in s.values())  # a retried child redoes nothing
    # a child that failed for good (say its instance died) speaks for its own item's unanswered pairs;
    # the parent's FAILED event, which Batch sends too, says nothing more
    for k in keys(stack, "results/day/2/") + keys(stack, "results/day/3/"):
        stack.s3.delete_object(Bucket=BUCKET, Key=k)
    uri = f"s3://{BUCKET}/{manifests(stack)[0]}"
    child = {"jobId": "other-attempt:1", "jobName": "cellpaint-x", "statusReason": "Host EC2 terminated", "parameters": {"manifest": uri},
             "arrayProperties": {"index": 1}}
    stack.s3.delete_object(Bucket=BUCKET, Key=manifests(stack)[0].replace("manifest.json", "taken-1.json"))  # as if it never started
    assert sorted(n.pair for n in notify.from_batch_failure(stack.s3, child)) == ["day/2", "day/3"]
    assert notify.from_batch_failure(stack.s3, {**child, "jobId": "other-attempt", "arrayProperties": {"size": 3}}) == []


def test_a_reupload_is_never_paired_with_the_other_halfs_old_version(stack, monkeypatch):
    """Both halves uploaded again: the new image's event meets the old mask, which was already
    restored with the old image. It waits for the new mask (its event comes back on the queue after
    the settle) instead of making a job of new image + old mask. A new mask alone, on purpose, is
    paired with the image once the settle has passed."""
    from shared.pipeline.ingest import REUPLOAD_SETTLE_S

    from .conftest import later

    sent = []
    stack.ingest.SQS.meta.events.register("provide-client-params.sqs.SendMessage", lambda params, **kw: sent.append(params))
    image, mask = good_pair()
    other_mask = encode(np.pad(np.ones((8, 8), np.uint8) * 255, ((4, 36), (4, 52))))
    stack.ingest.lambda_handler(upload(stack, "incoming/re/p.png", image), Context())
    stack.ingest.lambda_handler(upload(stack, "incoming/re/p.mask.png", mask), Context())
    assert len(stack.submits) == 1
    # the re-upload: the image first ...
    image_event = upload(stack, "incoming/re/p.png", encode(np.asarray(Image.open(io.BytesIO(image)))[:, ::-1]))
    assert stack.ingest.lambda_handler(image_event, Context()) == {"batchItemFailures": []}
    assert len(stack.submits) == 1  # no job for new image + old mask
    [again] = sent
    assert json.loads(again["MessageBody"]) == json.loads(image_event["Records"][0]["body"])
    assert 1 <= again["DelaySeconds"] <= REUPLOAD_SETTLE_S + 1
    # ... then its mask: the new pair goes
    stack.ingest.lambda_handler(upload(stack, "incoming/re/p.mask.png", other_mask), Context())
    assert len(handoffs(stack)) == 2
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=handoffs(stack)[-1])["Body"].read())
    heads = {r: stack.s3.head_object(Bucket=BUCKET, Key=f"incoming/re/p{'.mask' if r == 'mask' else ''}.png")["VersionId"] for r in ("image", "mask")}
    assert (doc["pairs"][0]["image_version"], doc["pairs"][0]["mask_version"]) == (heads["image"], heads["mask"])
    # the delayed image event comes back: that pairing is done already
    later(monkeypatch, REUPLOAD_SETTLE_S + 1)
    stack.ingest.lambda_handler(image_event, Context())
    assert len(handoffs(stack)) == 2
    # a new mask alone, on purpose: it waits the settle, then pairs with the current image
    mask_event = upload(stack, "incoming/re/p.mask.png", mask)
    monkeypatch.undo()
    stack.ingest.lambda_handler(mask_event, Context())
    assert len(handoffs(stack)) == 2 and len(sent) == 2
    later(monkeypatch, REUPLOAD_SETTLE_S + 1)
    stack.ingest.lambda_handler(mask_event, Context())
    assert len(handoffs(stack)) == 3
