"""A lab's own model through the stack, on moto: photos under adapt/<lab>/ settle into one training
job, the job writes models/<lab>/ and tells the lab, and from then on that lab's pairs, and only
theirs, are restored with it."""
from __future__ import annotations

import json
from datetime import timedelta

import numpy as np

from shared.pipeline import adapt
from shared.pipeline.leases import now_utc

from .conftest import BUCKET, Context, encode, inbox, keys, run_jobs, s3_body, sqs_event, upload
from tests.conftest import synthetic_cell


def adapt_queue(st) -> str:
    return st.sqs.create_queue(QueueName="adapt")["QueueUrl"]


def put_photos(st, lab: str, n: int, rng) -> None:
    for i in range(n):
        st.s3.put_object(Bucket=BUCKET, Key=f"adapt/{lab}/day1/{i + 1}.png", Body=encode(synthetic_cell(rng, 96, 120)))


def checks(st, url: str) -> list[str]:
    msgs = st.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"])["adapt_check"] for m in msgs]


def test_lab_names_come_from_the_key_only():
    assert adapt.lab_of_key("adapt/lab1/day 1/a.png") == "lab1"
    assert adapt.lab_of_key("adapt/lab1") is None and adapt.lab_of_key("incoming/lab1/a.png") is None
    assert adapt.lab_of_key("adapt/../x.png") is None and adapt.lab_of_key("adapt/-x/a.png") is None


def test_an_upload_settles_into_one_job(stack, rng):
    url = adapt_queue(stack)
    put_photos(stack, "lab1", 3, rng)
    # every photo's event asks; one check is scheduled for the lab
    assert adapt.schedule(stack.s3, stack.sqs, BUCKET, "lab1", url) and not adapt.schedule(stack.s3, stack.sqs, BUCKET, "lab1", url)
    t = now_utc()
    c = adapt.check(stack.s3, stack.batch, stack.sqs, BUCKET, "lab1", url, stack.job_queue, stack.job_definition, now=t)
    assert c.status == "settling"  # the newest photo is seconds old: the upload may go on
    c = adapt.check(stack.s3, stack.batch, stack.sqs, BUCKET, "lab1", url, stack.job_queue, stack.job_definition,
                    now=t + timedelta(seconds=adapt.SETTLE_S + 1))
    assert c.status == "submitted" and c.manifest.startswith("jobs/adapt/lab1/")
    again = adapt.check(stack.s3, stack.batch, stack.sqs, BUCKET, "lab1", url, stack.job_queue, stack.job_definition,
                        now=t + timedelta(seconds=adapt.SETTLE_S + 60))
    assert again.status == "already"  # the same set of photos: one job
    doc = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=c.manifest)["Body"].read())
    assert doc["lab"] == "lab1" and [p["key"] for p in doc["photos"]] == [f"adapt/lab1/day1/{i}.png" for i in (1, 2, 3)]
    assert all(p["version"] for p in doc["photos"])  # exactly these versions are trained on
    jobs = stack.batch.list_jobs(jobQueue=stack.job_queue, filters=[{"name": "JOB_NAME", "values": ["adapt-*"]}])["jobSummaryList"]
    assert len(jobs) == 1
    put_photos(stack, "lab1", 4, rng)  # a fourth photo later: a new set, a new job on all four
    c2 = adapt.check(stack.s3, stack.batch, stack.sqs, BUCKET, "lab1", url, stack.job_queue, stack.job_definition,
                     now=now_utc() + timedelta(seconds=adapt.SETTLE_S + 1))
    assert c2.status == "submitted" and c2.manifest != c.manifest


def test_the_handler_schedules_and_checks(stack, rng, monkeypatch):
    from .conftest import load_handler

    url = adapt_queue(stack)
    monkeypatch.setenv("ADAPT_QUEUE_URL", url)
    monkeypatch.setenv("ADAPT_JOB_DEFINITION", stack.job_definition)
    fn = load_handler("adapt")
    put_photos(stack, "lab1", 2, rng)
    events = [s3_body(f"adapt/lab1/day1/{i}.png") for i in (1, 2)] + [s3_body("incoming/x.png")]
    assert fn.lambda_handler(sqs_event(*events), Context()) == {"batchItemFailures": []}
    delayed = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert delayed["ApproximateNumberOfMessagesDelayed"] == "1" and checks(stack, url) == []  # one check for the lab, later
    assert fn.lambda_handler(sqs_event({"adapt_check": "lab1"}), Context()) == {"batchItemFailures": []}


def test_the_job_makes_the_labs_model_and_only_its_pairs_use_it(stack, rng, monkeypatch, tiny_weights, inpainter, tmp_path):
    from gpu_job.training.adapt_job import run_adapt_job

    stack.s3.upload_file(str(tiny_weights), BUCKET, "models/stack.safetensors")
    stack.s3.upload_file(str(tiny_weights.with_suffix(".json")), BUCKET, "models/stack.json")
    monkeypatch.setenv("MODEL_URI", f"s3://{BUCKET}/models/stack.safetensors")
    monkeypatch.chdir(tmp_path)
    url = adapt_queue(stack)
    put_photos(stack, "lab1", 21, rng)
    c = adapt.check(stack.s3, stack.batch, stack.sqs, BUCKET, "lab1", url, stack.job_queue, stack.job_definition,
                    now=now_utc() + timedelta(seconds=adapt.SETTLE_S + 1))
    small = dict(batch_size=2, threads=1, max_steps=2, measure_images=1, force=True)
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "job-1")
    assert run_adapt_job(f"s3://{BUCKET}/{c.manifest}", minutes=3, device="cpu", s3=stack.s3, **small) == "ready"
    monkeypatch.setenv("AWS_BATCH_JOB_ID", "job-2")  # a second job for the same set (a retried SubmitJob) trains nothing
    assert run_adapt_job(f"s3://{BUCKET}/{c.manifest}", minutes=3, device="cpu", s3=stack.s3, **small) == "duplicate"
    assert {"models/lab1/weights.safetensors", "models/lab1/weights.json", "models/lab1/adapted.json"} <= set(keys(stack, "models/lab1/"))
    ready = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="models/lab1/adapted.json")["Body"].read())
    assert ready["status"] == "ready" and ready["photos"] == 21 and ready["model"]["version"]
    # the lab is told
    assert stack.notify.lambda_handler(sqs_event(s3_body("models/lab1/adapted.json")), Context()) == {"batchItemFailures": []}
    [msg] = inbox(stack)
    body = json.loads(msg["text"])
    assert body["kind"] == "model" and body["reason"].startswith("a model for lab1 is ready") and "over the shipped model" in body["reason"]
    # its pairs use it; another lab's do not
    image, mask = encode(synthetic_cell(rng, 48, 64)), encode((np.arange(48 * 64).reshape(48, 64) % 7 == 0).astype(np.uint8) * 255)
    for lab in ("lab1", "lab2"):
        stack.ingest.lambda_handler(upload(stack, f"incoming/{lab}/a.png", image), Context())
        stack.ingest.lambda_handler(upload(stack, f"incoming/{lab}/a.mask.png", mask), Context())
    run_jobs(stack, inpainter)
    got = {lab: json.loads(stack.s3.get_object(Bucket=BUCKET, Key=f"results/{lab}/a/result.json")["Body"].read())["model"]
           for lab in ("lab1", "lab2")}
    assert got["lab1"]["lab"] == "lab1" and got["lab1"]["sha256"] == ready["model"]["sha256"]
    assert "lab" not in got["lab2"] and got["lab2"]["sha256"] != got["lab1"]["sha256"]


def test_too_few_photos_end_in_a_reason(stack, rng, monkeypatch, tiny_weights, tmp_path):
    from gpu_job.training.adapt_job import run_adapt_job

    monkeypatch.chdir(tmp_path)
    url = adapt_queue(stack)
    put_photos(stack, "lab9", 5, rng)
    c = adapt.check(stack.s3, stack.batch, stack.sqs, BUCKET, "lab9", url, stack.job_queue, stack.job_definition,
                    now=now_utc() + timedelta(seconds=adapt.SETTLE_S + 1))
    assert run_adapt_job(f"s3://{BUCKET}/{c.manifest}", minutes=3, device="cpu", s3=stack.s3, base=str(tiny_weights)) == "failed"
    err = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="failed/adapt/lab9/error.json")["Body"].read())
    assert "5 usable photos, at least 20" in err["reason"] and "cellpaint-adapt" not in err["reason"]
    assert keys(stack, "models/") == []
