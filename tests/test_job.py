"""The Batch job's entrypoint against moto S3: results, completion signal last, bad pairs, retries."""
import io
import json

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image

from gpu_job.inpainter.inpaint import Inpainter
from gpu_job.job import run
from shared.imaging.images import load_image
from shared.pipeline.manifest import PairJob, manifest, window_to_dict
from shared.imaging.windows import prepare
from tests.conftest import synthetic_cell

BUCKET = "cellpaint-test"


def put_png(s3, key, arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue()).get("VersionId")


def add_pair(s3, name, rng, h=80, w=96, samples=1):
    img = synthetic_cell(rng, h, w)
    mask = np.zeros((h, w), bool)
    mask[20:50, 30:70] = True
    vi = put_png(s3, f"incoming/{name}.png", img)
    vm = put_png(s3, f"incoming/{name}.mask.png", mask.astype(np.uint8) * 255)
    wins = [window_to_dict(w) for w in prepare(img, mask, 360, 16)]
    return img, mask, PairJob(name, f"incoming/{name}.png", f"incoming/{name}.mask.png", h, w,
                              {"steps": 3, "seed": 1, "samples": samples}, wins, vi, vm)


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("MODEL_URI", raising=False)
    with mock_aws():
        c = boto3.client("s3")
        c.create_bucket(Bucket=BUCKET)
        c.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield c


def test_job_writes_results_and_isolates_a_bad_pair(s3, tiny_weights, rng):
    img, mask, good = add_pair(s3, "lab1/cell-a", rng, samples=2)
    _, _, bad = add_pair(s3, "lab1/cell-b", rng)
    bad.options["label"] = "dragon"
    doc = manifest("job-1", BUCKET, [good, bad], "2026-11-26T00:00:00Z")
    s3.put_object(Bucket=BUCKET, Key="jobs/job-1/manifest.json", Body=json.dumps(doc).encode())
    inp = Inpainter(tiny_weights, "cpu")
    reads = []
    s3.meta.events.register("before-parameter-build.s3.GetObject",
                            lambda params, **kw: reads.append(params["Key"]) if params["Key"].startswith("results/") else None)
    status = run(f"s3://{BUCKET}/jobs/job-1/manifest.json", s3=s3, inpainter=inp)
    assert status == {"lab1/cell-a": "succeeded", "lab1/cell-b": "failed"}
    # the manifest was taken for the first time: no result is looked for before sampling, only under the results lease
    assert reads == ["results/lab1/cell-a/result.json"]
    out = load_image(s3.get_object(Bucket=BUCKET, Key="results/lab1/cell-a/inpainted.png")["Body"].read())
    assert out.shape == img.shape and np.array_equal(out[~mask], img[~mask])
    result = json.loads(s3.get_object(Bucket=BUCKET, Key="results/lab1/cell-a/result.json")["Body"].read())
    assert result["status"] == "succeeded" and result["options"]["steps"] == 3 and result["options"]["samples"] == 2
    assert result["outputs"]["uncertainty"] == "results/lab1/cell-a/uncertainty.png"
    assert len(result["model"]["sha256"]) == 64 and result["timings"]["total_s"] > 0
    # result.json is the completion signal: it must be the last object written for the pair
    objs = s3.list_objects_v2(Bucket=BUCKET, Prefix="results/lab1/cell-a/")["Contents"]
    assert max(objs, key=lambda o: o["LastModified"])["Key"].endswith("result.json") or \
        len({o["LastModified"] for o in objs}) == 1
    err = json.loads(s3.get_object(Bucket=BUCKET, Key="failed/lab1/cell-b/error.json")["Body"].read())
    assert "unknown label 'dragon'" in err["reason"]
    # the uploads are untouched
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="incoming/")["Contents"]}
    assert keys == {"incoming/lab1/cell-a.png", "incoming/lab1/cell-a.mask.png", "incoming/lab1/cell-b.png", "incoming/lab1/cell-b.mask.png"}
    # a retried job (e.g. after a spot reclaim) does not redo a finished pair
    reads.clear()
    again = run(f"s3://{BUCKET}/jobs/job-1/manifest.json", s3=s3, inpainter=inp)
    assert again["lab1/cell-a"] == "skipped" and "results/lab1/cell-a/result.json" in reads


def test_job_texture_option(s3, tiny_weights, tiny_texture_weights, rng, monkeypatch):
    _, _, plain = add_pair(s3, "plain", rng)
    plain.options["texture"] = False  # the default is on
    img, mask, textured = add_pair(s3, "textured", rng)
    textured.options["texture"] = True
    doc = manifest("j-t", BUCKET, [plain, textured], "t")
    s3.put_object(Bucket=BUCKET, Key="jobs/j-t/manifest.json", Body=json.dumps(doc).encode())
    monkeypatch.setenv("CELLPAINT_TEXTURE_WEIGHTS", str(tiny_texture_weights))
    assert run(f"s3://{BUCKET}/jobs/j-t/manifest.json", s3=s3, inpainter=Inpainter(tiny_weights, "cpu")) == {"plain": "succeeded", "textured": "succeeded"}
    result = lambda p: json.loads(s3.get_object(Bucket=BUCKET, Key=f"results/{p}/result.json")["Body"].read())  # noqa: E731
    assert result("textured")["options"]["texture"] is True and result("plain")["options"]["texture"] is False
    out = load_image(s3.get_object(Bucket=BUCKET, Key="results/textured/inpainted.png")["Body"].read())
    assert np.array_equal(out[~mask], img[~mask])
    # no texture-stage weights: that pair fails with the reason, the plain one is unaffected
    for key in [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/")["Contents"]]:
        s3.delete_object(Bucket=BUCKET, Key=key)
    monkeypatch.setenv("CELLPAINT_TEXTURE_WEIGHTS", "/nowhere/texture.safetensors")
    assert run(f"s3://{BUCKET}/jobs/j-t/manifest.json", s3=s3, inpainter=Inpainter(tiny_weights, "cpu")) == {"plain": "succeeded", "textured": "failed"}
    err = json.loads(s3.get_object(Bucket=BUCKET, Key="failed/textured/error.json")["Body"].read())
    assert "no texture-stage weights" in err["reason"]


def test_job_reads_the_validated_version(s3, tiny_weights, rng):
    img, mask, pair = add_pair(s3, "cell", rng)
    put_png(s3, "incoming/cell.png", np.zeros((10, 10, 3), np.uint8))  # a later upload under the same key
    s3.put_object(Bucket=BUCKET, Key="jobs/j/manifest.json", Body=json.dumps(manifest("j", BUCKET, [pair], "t")).encode())
    assert run(f"s3://{BUCKET}/jobs/j/manifest.json", s3=s3, inpainter=Inpainter(tiny_weights, "cpu")) == {"cell": "succeeded"}


def test_bad_manifest_exit_code(s3, tiny_weights, monkeypatch):
    from gpu_job.__main__ import main

    s3.put_object(Bucket=BUCKET, Key="jobs/x/manifest.json", Body=b'{"version": 99, "pairs": []}')
    monkeypatch.setenv("MODEL_URI", str(tiny_weights))
    assert main(["run", "--manifest", f"s3://{BUCKET}/jobs/x/manifest.json"]) == 2
    assert main(["run", "--manifest", f"s3://{BUCKET}/jobs/missing/manifest.json"]) == 2


TIMINGS = {"model_load_s", "download_decode_s", "input_wait_s", "sample_s", "encode_upload_s", "batch", "batch_pairs", "batch_rows",
           "total_s"}


def test_plan_batches_cuts_by_rows_and_pixels():
    from gpu_job.job import plan_batches

    win = [{}]  # only counted here
    shapes = [(1, 1), (2, 1), (1, 3), (1, 1), (8, 2)]  # (samples, windows)
    pairs = [PairJob(f"p{i}", "i", "m", 10, 10, {"samples": s}, win * w) for i, (s, w) in enumerate(shapes)]
    assert [[p.pair for p in b] for b in plan_batches(pairs, rows=3)] == [["p0", "p1"], ["p2"], ["p3", "p4"]]
    assert [len(b) for b in plan_batches(pairs, rows=100)] == [5]
    assert [len(b) for b in plan_batches(pairs, rows=100, max_pixels=200)] == [2, 2, 1]  # 100 px each
    pairs[1].options = {"samples": "many"}  # bad options: one row, and the pair fails at load with the reason
    assert [len(b) for b in plan_batches(pairs, rows=3)] == [3, 2]
    assert plan_batches([], rows=3) == []


def test_job_batches_prefetch_and_keep_results_in_order(s3, tiny_weights, rng):
    # Five pairs, two model rows per job batch: batches [a, b], [c, d (bad)], [e]. While batch 0
    # samples, the reader must already be downloading batch 1; while batch 1 samples, the writer
    # must be writing batch 0's results. Each wait below times out if that stage does not overlap.
    import threading

    names = ["a", "b", "c", "d", "e"]
    made = {n: add_pair(s3, n, rng, h=70 + 6 * i, w=90 - 4 * i) for i, n in enumerate(names)}
    made["d"][2].options["label"] = "dragon"
    doc = manifest("j-b", BUCKET, [made[n][2] for n in names], "t")
    s3.put_object(Bucket=BUCKET, Key="jobs/j-b/manifest.json", Body=json.dumps(doc).encode())
    fetched, written = threading.Event(), threading.Event()
    threads = set()

    def on_get(params, **kw):
        threads.add(threading.current_thread().name)
        if params.get("Key") == "incoming/c.png":
            fetched.set()

    def on_put(params, **kw):
        if params.get("Key") == "results/b/result.json":
            written.set()

    s3.meta.events.register("before-parameter-build.s3.GetObject", on_get)
    s3.meta.events.register("before-parameter-build.s3.PutObject", on_put)
    inp = Inpainter(tiny_weights, "cpu")
    calls = []
    sample = inp.inpaint_many

    def watched(pairs, opts, windows):
        calls.append(len(pairs))
        if len(calls) == 1:
            assert fetched.wait(60), "batch 1 was not downloaded while batch 0 sampled"
        if len(calls) == 2:
            assert written.wait(60), "batch 0's results were not written while batch 1 sampled"
        return sample(pairs, opts, windows)

    inp.inpaint_many = watched
    status = run(f"s3://{BUCKET}/jobs/j-b/manifest.json", s3=s3, inpainter=inp, batch_rows=2)
    assert list(status.items()) == [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded"), ("d", "failed"), ("e", "succeeded")]
    assert calls == [2, 1, 1]  # d failed at load: batch 1 samples c alone
    assert any(t.startswith("gpu_job-read") for t in threads)
    err = json.loads(s3.get_object(Bucket=BUCKET, Key="failed/d/error.json")["Body"].read())
    assert "unknown label 'dragon'" in err["reason"]

    read = lambda key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # noqa: E731
    batched = {}
    for i, n in enumerate(["a", "b", "c", "e"]):
        img, mask, _ = made[n]
        out = load_image(read(f"results/{n}/inpainted.png"))
        assert out.shape == img.shape and np.array_equal(out[~mask], img[~mask]), n  # each result is its own pair's
        batched[n] = out
        t = json.loads(read(f"results/{n}/result.json"))["timings"]
        assert set(t) == TIMINGS, n
        assert t["batch"] == [0, 0, 1, 2][i] and t["batch_pairs"] == [2, 2, 1, 1][i] and t["batch_rows"] == [2, 2, 1, 1][i]
        assert t["sample_s"] > 0 and t["download_decode_s"] > 0 and t["encode_upload_s"] > 0 and t["input_wait_s"] >= 0
        assert t["total_s"] >= t["model_load_s"] + t["sample_s"] - 0.002  # nested intervals, each rounded to 1 ms
    # the same manifest in one batch, without the reader and writer overlapping: the same pixels
    for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/")["Contents"]:
        s3.delete_object(Bucket=BUCKET, Key=o["Key"])
    inp.inpaint_many = sample
    assert run(f"s3://{BUCKET}/jobs/j-b/manifest.json", s3=s3, inpainter=inp, batch_rows=100)["e"] == "succeeded"
    for n, out in batched.items():
        # The same pixels to rounding: the texture stage's tiles of all pairs in a batch share model
        # calls, and the CPU's bf16 kernels for another batch size may round a level differently.
        diff = np.abs(load_image(read(f"results/{n}/inpainted.png")).astype(int) - out.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05, (n, diff.max(), diff.mean())
        assert json.loads(read(f"results/{n}/result.json"))["timings"]["batch_pairs"] == 4


def test_job_timings_without_overlap_are_all_measured(s3, tiny_weights, rng):
    _, _, pair = add_pair(s3, "solo", rng)
    s3.put_object(Bucket=BUCKET, Key="jobs/s/manifest.json", Body=json.dumps(manifest("s", BUCKET, [pair], "t")).encode())
    assert run(f"s3://{BUCKET}/jobs/s/manifest.json", s3=s3, inpainter=Inpainter(tiny_weights, "cpu")) == {"solo": "succeeded"}
    t = json.loads(s3.get_object(Bucket=BUCKET, Key="results/solo/result.json")["Body"].read())["timings"]
    assert set(t) == TIMINGS and (t["batch"], t["batch_pairs"], t["batch_rows"]) == (0, 1, len(pair.windows))
    # One batch: nothing hides its download, so the job waited for input. Two measured durations are
    # never compared (a timing race); their structure is what the job guarantees.
    assert t["download_decode_s"] > 0 and t["input_wait_s"] > 0 and all(v >= 0 for v in t.values())


def test_newest_upload_wins_whole_whatever_order_jobs_finish(s3, tiny_weights, rng):
    """A pair uploaded again while its first job runs: two jobs, and the older upload's job finishes
    last. results/<pair>/ must hold the newer upload's images and result.json, not a mix."""
    inp = Inpainter(tiny_weights, "cpu")
    _, _, old = add_pair(s3, "lab1/again", rng)
    new_img, new_mask, new = add_pair(s3, "lab1/again", rng)  # the re-upload: new versions of both halves
    old.uploaded, new.uploaded = "2026-12-03T10:00:00+00:00", "2026-12-03T10:05:00+00:00"
    for job_id, p in (("job-new", new), ("job-old", old)):  # the newer job finishes first
        s3.put_object(Bucket=BUCKET, Key=f"jobs/{job_id}/manifest.json",
                      Body=json.dumps(manifest(job_id, BUCKET, [p], "2026-12-03T10:06:00Z")).encode())
    assert run(f"s3://{BUCKET}/jobs/job-new/manifest.json", s3=s3, inpainter=inp) == {"lab1/again": "succeeded"}
    assert run(f"s3://{BUCKET}/jobs/job-old/manifest.json", s3=s3, inpainter=inp) == {"lab1/again": "superseded"}
    result = json.loads(s3.get_object(Bucket=BUCKET, Key="results/lab1/again/result.json")["Body"].read())
    assert result["job_id"] == "job-new" and result["inputs"]["image_version"] == new.image_version
    assert result["inputs"]["uploaded"] == new.uploaded
    got = s3.get_object(Bucket=BUCKET, Key="results/lab1/again/inpainted.png")
    assert got["VersionId"] == result["output_versions"]["inpainted"]  # the current image is the one result.json names
    out = load_image(got["Body"].read())
    assert np.array_equal(out[~new_mask], new_img[~new_mask])
    # the other order: the older upload first, then the newer replaces it whole
    _, _, older = add_pair(s3, "lab1/order", rng)
    newer_img, newer_mask, newer = add_pair(s3, "lab1/order", rng)
    older.uploaded, newer.uploaded = "2026-12-03T11:00:00+00:00", "2026-12-03T11:01:00+00:00"
    for job_id, p in (("job-a", older), ("job-b", newer)):
        s3.put_object(Bucket=BUCKET, Key=f"jobs/{job_id}/manifest.json",
                      Body=json.dumps(manifest(job_id, BUCKET, [p], "2026-12-03T11:02:00Z")).encode())
        assert run(f"s3://{BUCKET}/jobs/{job_id}/manifest.json", s3=s3, inpainter=inp) == {"lab1/order": "succeeded"}
    result = json.loads(s3.get_object(Bucket=BUCKET, Key="results/lab1/order/result.json")["Body"].read())
    assert result["job_id"] == "job-b"
    out = load_image(s3.get_object(Bucket=BUCKET, Key="results/lab1/order/inpainted.png")["Body"].read())
    assert np.array_equal(out[~newer_mask], newer_img[~newer_mask])


def test_a_job_near_its_time_limit_hands_unstarted_pairs_back(s3, tiny_weights, rng, monkeypatch):
    """No job that cannot finish: near its deadline (or told to stop) the job starts no new batch;
    the pairs left are handed back (exit 75, which the retry strategy retries), and the next attempt
    of the same Batch job does only those."""
    import time

    from gpu_job import __main__ as job_main
    from gpu_job import job as job_mod

    pairs = [add_pair(s3, f"late/{i}", rng)[2] for i in range(3)]
    doc = manifest("job-late", BUCKET, pairs, "2026-12-03T00:00:00Z")
    s3.put_object(Bucket=BUCKET, Key="jobs/job-late/manifest.json", Body=json.dumps(doc).encode())
    uri = f"s3://{BUCKET}/jobs/job-late/manifest.json"
    inp = Inpainter(tiny_weights, "cpu")
    first = run(uri, s3=s3, inpainter=inp, batch_job_id="batch-1", batch_rows=1, deadline=time.time() + 60)
    assert set(first.values()) == {"handed back"}  # within the 120 s margin: nothing started
    assert not s3.list_objects_v2(Bucket=BUCKET, Prefix="results/late/").get("KeyCount")
    job_mod.STOP.set()  # SIGTERM
    try:
        assert set(run(uri, s3=s3, inpainter=inp, batch_job_id="batch-1", batch_rows=1).values()) == {"handed back"}
    finally:
        job_mod.STOP.clear()
    again = run(uri, s3=s3, inpainter=inp, batch_job_id="batch-1", batch_rows=1)  # the retry, with time to spare
    assert set(again.values()) == {"succeeded"}
    # the entry point turns a hand-back into the exit code the retry strategy retries
    monkeypatch.setattr(job_mod, "run", lambda *a, **k: {"late/0": "handed back"})
    assert job_main.main(["run", "--manifest", uri]) == job_mod.EXIT_HANDED_BACK == 75
    from cellpaint.local.runner import BatchRunner
    from tests.test_template import template

    strategy = template().resources["JobDefinition"]["Properties"]["RetryStrategy"]
    assert BatchRunner.action({"evaluateOnExit": [{k[0].lower() + k[1:]: v for k, v in r.items()} for r in strategy["EvaluateOnExit"]]},
                              75, "Essential container in task exited") == "RETRY"
