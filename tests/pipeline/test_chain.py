"""The whole chain in-process: `aws s3 cp` (moto S3) -> ingest handler -> the Batch job's manifest
-> gpu_job.job.run (tiny weights, CPU) -> results/ -> notify handler -> SNS -> an SQS subscription
read back here. Nothing is stubbed between the stages: each stage reads what the previous one
wrote to S3, exactly as the deployed stack does.

Also the contract between the job's result.json / error.json and what shared/pipeline/notify.py reads.
"""
from __future__ import annotations

import copy
import json
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
import pytest
from moto.sns.models import sns_backends

from shared.options import OPTIONS, InpaintOptions
from shared.pipeline.records import NOTICE_VERSION
from shared.imaging.images import load_image, load_mask

from .conftest import BUCKET, REGION, Context, batch_jobs, cell_image, disc_mask, encode, inbox, keys, later, load_event, s3_body, sqs_event

H, W = 90, 120  # not square, not the model's size: the result must still be 90x120
PBC = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


# ---- helpers -----------------------------------------------------------------------------------

def put(st, key: str, data: bytes) -> dict:
    """`aws s3 cp` of one file: the object, and the S3 event (as one SQS record) it causes."""
    version = st.s3.put_object(Bucket=BUCKET, Key=key, Body=data).get("VersionId")
    return sqs_event(s3_body(key, version=version))["Records"][0]


def output_events(st) -> list[dict]:
    """The S3 events of every results/*/result.json and failed/*/error.json, with versions, as the
    stack's notify queue receives them (one SQS record each)."""
    out = []
    for key in keys(st, "results/") + keys(st, "failed/"):
        if key.endswith(("/result.json", "/error.json")):
            version = st.s3.head_object(Bucket=BUCKET, Key=key).get("VersionId")
            out += sqs_event(s3_body(key, version=version))["Records"]
    return out


def all_output_events(st) -> list[dict]:
    """Every object the job wrote under results/ (the stack only routes result.json to notify; an
    over-broad rule, or a human, could still deliver the rest to ingest)."""
    return [sqs_event(s3_body(k))["Records"][0] for k in keys(st, "results/") + keys(st, "failed/")]


def read_json(st, key: str) -> dict:
    return json.loads(st.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def read_png(st, key: str) -> np.ndarray:
    return load_image(st.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(), key)


def sns_raw(st) -> list[dict]:
    """Every message as published (all protocols' texts), from moto's topic."""
    sent = sns_backends["123456789012"][REGION].topics[st.topic_arn].sent_notifications
    return [{"subject": s[2], "parts": json.loads(s[1])} for s in sent]


def upload_versions(st) -> dict:
    r = st.s3.list_object_versions(Bucket=BUCKET, Prefix="incoming/")
    assert not r.get("DeleteMarkers"), "an upload was deleted"
    out = {}
    for v in r.get("Versions", []):
        out.setdefault(v["Key"], []).append(v["VersionId"])
    return out


def batch_failed_event(manifest_uri: str) -> dict:
    ev = load_event("sqs-eventbridge-batch-failed.json")
    body = json.loads(ev["Records"][0]["body"])
    body["detail"]["parameters"]["manifest"] = manifest_uri
    ev["Records"][0]["body"] = json.dumps(body)
    return ev


@pytest.fixture(scope="module")
def weights_without_platelet(tmp_path_factory):
    """Tiny weights trained without the 'platelet' class, as a MODEL_URI model could be: ingest
    accepts the label (it is a PBC class), only the GPU job can find the model does not know it."""
    import torch

    from gpu_job.inpainter.diffusion import DiffusionConfig
    from gpu_job.inpainter.model import UNet, UNetConfig
    from gpu_job.inpainter.weights import save_weights

    torch.manual_seed(1)
    model = UNet(UNetConfig(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                            attn_resolutions=(8,), groups=4, num_classes=7))
    torch.nn.init.normal_(model.conv_out.weight, std=0.02)
    path = tmp_path_factory.mktemp("weights7") / "tiny7.safetensors"
    save_weights(path, model, DiffusionConfig(), PBC[:7], {"code_version": "test-7", "training": {"steps": 0}})
    return path


# ---- the chain ---------------------------------------------------------------------------------

def test_upload_to_notification(stack, inpainter):
    """One upload through every stage, asserted stage by stage. Long on purpose: each stage's
    assertions need the state the stage before left, and one run of the whole chain is what keeps
    the suite fast."""
    from gpu_job.job import run

    image, mask = cell_image(H, W, seed=3), disc_mask(H, W)
    image_png, mask_png = encode(image), encode(mask)
    uploaded = {
        "incoming/lab 1/cell-a.json": b'{"steps": 3, "seed": 7, "samples": 2, "sampler": "ddim"}',
        "incoming/lab 1/cell-a.png": image_png,
        "incoming/lab 1/cell-a.mask.png": mask_png,
        "incoming/lab 1/cell-b.png": image_png,
        "incoming/lab 1/cell-b.mask.png": encode(np.zeros((H, W), np.uint8)),  # empty mask: bad pair
    }
    # -- ingest: the sidecar and the two images arrive first (each waits for its mask), then both
    # masks in one SQS batch, the mask of cell-a delivered three times and an image event again.
    ev = {k: put(stack, k, v) for k, v in uploaded.items() if not k.endswith(".mask.png")}
    first = [ev["incoming/lab 1/cell-a.json"], ev["incoming/lab 1/cell-a.png"], ev["incoming/lab 1/cell-b.png"]]
    assert stack.ingest.lambda_handler({"Records": first}, Context()) == {"batchItemFailures": []}
    assert stack.submits == [] and keys(stack, "failed/") == []
    ev.update({k: put(stack, k, v) for k, v in uploaded.items() if k.endswith(".mask.png")})
    dup = [copy.deepcopy(ev["incoming/lab 1/cell-a.mask.png"]) for _ in range(3)]
    for i, r in enumerate(dup):
        r["messageId"] = f"dup-{i}"
    second = dup + [ev["incoming/lab 1/cell-b.mask.png"], ev["incoming/lab 1/cell-a.png"]]
    assert stack.ingest.lambda_handler({"Records": second}, Context()) == {"batchItemFailures": []}
    # ... and S3 delivers everything again, ten times: still one job
    for _ in range(10):
        assert stack.ingest.lambda_handler({"Records": list(ev.values())}, Context()) == {"batchItemFailures": []}
    assert len(stack.submits) == 1
    [submit] = stack.submits
    assert submit["jobQueue"] == stack.job_queue and submit["jobDefinition"] == stack.job_definition
    manifest_uri = submit["parameters"]["manifest"]
    assert manifest_uri.startswith(f"s3://{BUCKET}/jobs/") and manifest_uri.endswith("/manifest.json")
    manifest = read_json(stack, manifest_uri.split(f"s3://{BUCKET}/", 1)[1])
    assert [p["pair"] for p in manifest["pairs"]] == ["lab 1/cell-a"]  # the bad pair never reaches the GPU
    assert manifest["pairs"][0]["options"] == InpaintOptions(steps=3, seed=7, samples=2, sampler="ddim").to_dict()  # checked once, carried whole
    # the bad pair was refused at ingest, once
    assert keys(stack, "failed/") == ["failed/lab 1/cell-b/error.json"]
    ingest_error = read_json(stack, "failed/lab 1/cell-b/error.json")
    assert ingest_error["stage"] == "ingest" and "all black" in ingest_error["reason"]

    # -- the Batch job, in-process, with the manifest it was given
    status = run(manifest_uri, s3=stack.s3, inpainter=inpainter)
    assert status == {"lab 1/cell-a": "succeeded"}
    base = "results/lab 1/cell-a/"
    assert keys(stack, base) == [base + n for n in ("inpainted.png", "preview.png", "result.json", "uncertainty.png")]
    out = read_png(stack, base + "inpainted.png")
    assert out.shape == (H, W, 3)  # the original size
    m = load_mask(mask_png)
    assert np.array_equal(out[~m], image[~m])  # outside the mask: bit-identical
    assert not np.array_equal(out[m], image[m])  # inside: restored (the tiny model is random, but not the identity)
    preview = read_png(stack, base + "preview.png")
    assert preview.shape[0] >= H and preview.shape[1] >= 3 * W  # original | mask overlay | result (| uncertainty)

    # -- result.json: what the job wrote is what notify reads
    result = read_json(stack, base + "result.json")
    assert result["status"] == "succeeded" and result["pair"] == "lab 1/cell-a"
    assert result["job_id"] == manifest["job_id"]
    assert result["inputs"]["image_key"] == "incoming/lab 1/cell-a.png"
    assert result["inputs"]["mask_key"] == "incoming/lab 1/cell-a.mask.png"
    assert result["inputs"]["image_version"] == manifest["pairs"][0]["image_version"]
    o = result["options"]
    assert (o["steps"], o["seed"], o["samples"], o["sampler"]) == (3, 7, 2, "ddim") and set(o) == set(OPTIONS)  # recorded whole
    assert isinstance(result["model"], dict) and len(result["model"]["sha256"]) == 64
    assert result["model"]["version"] == "test"
    assert isinstance(result["timings"], dict) and result["timings"]["total_s"] > 0
    assert all(isinstance(v, (int, float)) for v in result["timings"].values())
    assert result["outputs"] == {"inpainted": base + "inpainted.png", "preview": base + "preview.png",
                                 "uncertainty": base + "uncertainty.png"}
    assert result["size"] == {"width": W, "height": H}

    # -- the job's writes never re-trigger ingest, even if delivered to it
    assert stack.ingest.lambda_handler({"Records": all_output_events(stack)}, Context()) == {"batchItemFailures": []}
    assert len(stack.submits) == 1

    # -- notify: result.json and error.json, each delivered twice
    events = output_events(stack)
    assert len(events) == 2
    assert stack.notify.lambda_handler({"Records": events + events}, Context()) == {"batchItemFailures": []}
    got = {m["pair"]: m for m in (json.loads(x["text"]) for x in inbox(stack))}
    assert set(got) == {"lab 1/cell-a", "lab 1/cell-b"}  # one message each

    ok = got["lab 1/cell-a"]
    assert ok["version"] == NOTICE_VERSION and ok["status"] == "succeeded" and ok["reason"] is None
    assert ok["bucket"] == BUCKET
    assert ok["keys"] == {"image": "incoming/lab 1/cell-a.png", "mask": "incoming/lab 1/cell-a.mask.png",
                          "inpainted": base + "inpainted.png", "preview": base + "preview.png",
                          "result": base + "result.json", "uncertainty": base + "uncertainty.png"}
    assert ok["timings"] == result["timings"]
    assert ok["job"] == {"job_id": manifest["job_id"]} and ok["model"] == result["model"] and ok["labels"] == result["labels"]
    assert ok["options"] == result["options"] == InpaintOptions(steps=3, seed=7, samples=2).to_dict()  # every option, as the fill was made
    assert len(result["labels"]) == result["windows"]  # per window: the class the model was told, or none
    link = urlparse(ok["link"])
    assert unquote(link.path).endswith("/results/lab 1/cell-a/inpainted.png")
    assert parse_qs(link.query)["X-Amz-Expires"] == ["3600"] and ok["link_expires_in"] == 3600
    assert parse_qs(link.query)["versionId"] == [result["output_versions"]["inpainted"]]  # the image this result names, not a later one

    bad = got["lab 1/cell-b"]
    assert bad["status"] == "failed" and "all black" in bad["reason"] and bad["link"] is None
    assert bad["keys"]["error"] == "failed/lab 1/cell-b/error.json"
    assert bad["keys"]["image"] == "incoming/lab 1/cell-b.png" and bad["keys"]["mask"] == "incoming/lab 1/cell-b.mask.png"
    assert bad["job"] == {"stage": "ingest"}

    # the email text of the same two messages
    raw = {r["parts"]["default"].splitlines()[0]: r for r in sns_raw(stack)}
    email_ok = raw["Pair: lab 1/cell-a"]["parts"]["email"]
    assert "Status: succeeded" in email_ok and ok["link"] in email_ok and "link valid for 1 h" in email_ok
    assert f"s3://{BUCKET}/{base}inpainted.png" in email_ok and "Timings: " in email_ok
    email_bad = raw["Pair: lab 1/cell-b"]["parts"]["email"]
    assert "Status: failed" in email_bad and "Reason: " in email_bad and "all black" in email_bad
    assert raw["Pair: lab 1/cell-a"]["subject"] == "cellpaint: lab 1/cell-a is restored"
    assert raw["Pair: lab 1/cell-b"]["subject"] == "cellpaint: lab 1/cell-b failed"

    # -- a late Batch FAILED for the same job (e.g. the container died after its last write)
    # reports nothing new: every pair of the manifest already has its output
    assert stack.notify.lambda_handler(batch_failed_event(manifest_uri), Context()) == {"batchItemFailures": []}
    assert inbox(stack) == []

    # -- a retried attempt of the job (spot reclaim) does not redo the pair or notify again
    assert run(manifest_uri, s3=stack.s3, inpainter=inpainter) == \
        {"lab 1/cell-a": "skipped"}

    # -- the uploads are untouched: one version each, same bytes
    versions = upload_versions(stack)
    assert set(versions) == set(uploaded) and all(len(v) == 1 for v in versions.values())
    for key, data in uploaded.items():
        assert stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_a_pair_failing_in_the_gpu_job_does_not_lose_the_other(stack, weights_without_platelet, monkeypatch):
    """Two pairs in one job; the model at MODEL_URI does not know one pair's label. That pair gets
    failed/<pair>/error.json (stage gpu) and a failure notification; the other is restored."""
    from gpu_job import job

    image, mask = cell_image(H, W, seed=5), disc_mask(H, W)
    records = [put(stack, "incoming/c.json", b'{"label": "platelet", "steps": 2}'),
               put(stack, "incoming/d.json", b'{"label": "monocyte", "steps": 2}')]
    for name in ("c", "d"):
        records.append(put(stack, f"incoming/{name}.tif", encode(image, "TIFF")))
        records.append(put(stack, f"incoming/{name}.mask.png", encode(mask)))
    assert stack.ingest.lambda_handler({"Records": records}, Context()) == {"batchItemFailures": []}
    [submit] = stack.submits
    manifest_uri = submit["parameters"]["manifest"]

    # the weights come from MODEL_URI (s3://BUCKET/models/...), with their JSON beside them
    for suffix in (".safetensors", ".json"):
        stack.s3.put_object(Bucket=BUCKET, Key=f"models/tiny7{suffix}",
                            Body=weights_without_platelet.with_suffix(suffix).read_bytes())
    monkeypatch.setenv("MODEL_URI", f"s3://{BUCKET}/models/tiny7.safetensors")
    assert job.run(manifest_uri, s3=stack.s3, device="cpu") == {"c": "failed", "d": "succeeded"}

    error = read_json(stack, "failed/c/error.json")
    assert error["stage"] == "gpu" and error["pair"] == "c" and "unknown label 'platelet'" in error["reason"]
    assert error["keys"] == {"image": "incoming/c.tif", "mask": "incoming/c.mask.png"}
    assert keys(stack, "results/c/") == []
    out = read_png(stack, "results/d/inpainted.png")
    m = mask > 127
    assert out.shape == image.shape and np.array_equal(out[~m], image[~m])
    assert read_json(stack, "results/d/result.json")["model"]["version"] == "test-7"

    assert stack.notify.lambda_handler({"Records": output_events(stack)}, Context()) == {"batchItemFailures": []}
    got = {m["pair"]: m for m in (json.loads(x["text"]) for x in inbox(stack))}
    assert got["c"]["status"] == "failed" and "unknown label 'platelet'" in got["c"]["reason"]
    assert got["c"]["job"] == {"job_id": read_json(stack, manifest_uri.split(f"{BUCKET}/", 1)[1])["job_id"], "stage": "gpu"}
    assert got["c"]["keys"] == {"image": "incoming/c.tif", "mask": "incoming/c.mask.png", "error": "failed/c/error.json"}
    assert got["d"]["status"] == "succeeded" and got["d"]["options"]["steps"] == 2
    assert set(upload_versions(stack)) == {f"incoming/{n}{s}" for n in "cd" for s in (".json", ".tif", ".mask.png")}


def test_reupload_after_a_result_is_restored_again(stack, inpainter, monkeypatch):
    """Uploading a corrected mask makes a new pair version: ingest submits a new job (the claim is
    per version), and that job must restore the pair again, not skip it as already done. (The
    first job has finished, so the second upload gets a job of its own, not a place in its queue.)"""
    from gpu_job.job import run, serve

    image = cell_image(H, W, seed=9)
    stack.ingest.lambda_handler({"Records": [put(stack, "incoming/e.png", encode(image)),
                                             put(stack, "incoming/e.mask.png", encode(disc_mask(H, W)))]}, Context())
    first = stack.submits[-1]["parameters"]["manifest"]
    [job] = batch_jobs(stack)
    assert serve(first, s3=stack.s3, inpainter=inpainter, batch_job_id=job["jobId"]) == {"e": "succeeded"}
    # a corrected mask, uploaded under the same key
    smaller = np.zeros((H, W), np.uint8)
    smaller[20:40, 30:60] = 255
    corrected = {"Records": [put(stack, "incoming/e.mask.png", encode(smaller))]}
    stack.ingest.lambda_handler(corrected, Context())  # one half alone: it waits for the other's new version a while ...
    later(monkeypatch, 61)
    stack.ingest.lambda_handler(corrected, Context())  # ... and then goes with the image there
    assert len(stack.submits) == 2
    second = stack.submits[-1]["parameters"]["manifest"]
    assert run(second, s3=stack.s3, inpainter=inpainter) == {"e": "succeeded"}
    result = read_json(stack, "results/e/result.json")
    assert result["job_id"] == read_json(stack, second.split(f"{BUCKET}/", 1)[1])["job_id"]


def test_the_harmonic_stand_in_crosses_the_chain_and_says_so(stack, monkeypatch):
    """CELLPAINT_TEST_FILL=harmonic (the plumbing test, scripts/bench_local.py --fill harmonic):
    the job runs without weights, fills harmonically, and result.json names the stand-in."""
    from gpu_job.inpainter.classical import harmonic

    from .conftest import run_jobs

    monkeypatch.setenv("CELLPAINT_TEST_FILL", "harmonic")
    image, mask = cell_image(H, W, seed=5), disc_mask(H, W)
    put(stack, "incoming/plumb/p.png", encode(image))
    stack.ingest.lambda_handler({"Records": [put(stack, "incoming/plumb/p.mask.png", encode(mask))]}, Context())
    assert run_jobs(stack, None) == [{"plumb/p": "succeeded"}]
    doc = read_json(stack, "results/plumb/p/result.json")
    assert doc["model"]["sha256"] == "harmonic-stand-in"
    out = read_png(stack, "results/plumb/p/inpainted.png")
    assert (out == harmonic(image, mask > 0)).all()
