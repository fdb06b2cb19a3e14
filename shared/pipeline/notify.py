"""Notify: one SNS message per finished or failed pair, readable in an email and parseable by a
webhook (MessageStructure="json": "default"/"email" text, "http"/"https" a JSON body).

Triggers (all arrive on the notify queue): results/<pair>/result.json (success, written last by
the GPU job), failed/<pair>/error.json (ingest, GPU job or sweeper), and Batch "Job State Change"
FAILED (a job that died before writing anything, or was cancelled for want of GPU capacity: every
pair of its manifest, and of the manifests queued to it, without an output).

One message per notice: each is leased (shared/pipeline/leases.py) under jobs/claims/notify/ before it is
published, and the lease is final once SNS has the message. A notify invocation that dies after
the lease and before publishing leaves a lease that expires, and the redelivery publishes.
"""
from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import urlparse

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from shared.pipeline.leases import DEFAULT_LEASE_S, acquire, finish, lease_key, now_utc, release_quietly
from shared.pipeline.records import ModelReady, Notice, Result
from shared.pipeline.runner import queued, runner_of
from shared.pipeline.s3 import (MODELS, NOTIFY_CLAIMS, error_key, get_json, item_of, items_of, pair_from_output_key, presign,
                                result_key, take_key, written_by)
from shared.pipeline.s3events import object_events

# What Batch puts in statusReason when the job queue's JobStateTimeLimitActions cancels a job that
# sat RUNNABLE too long (template.yaml, RunnableTimeoutSeconds): no instance could be had for it.
RUNNABLE_CANCELLED = "Canceled by JobStateTimeLimit action"
MAX_REASON = 2000  # characters: SNS allows 256 KB, an email should stay readable
SUBJECT_MAX = 100  # SNS's limit


def from_result(s3: BaseClient, bucket: str, key: str, expires_in: int, version: str | None = None) -> Notice:
    """results/<pair>/result.json -> a success notice with a presigned link to inpainted.png."""
    pair, _ = pair_from_output_key(key)
    r = Result.from_json(get_json(s3, bucket, key, version))  # the version the event names, not a newer one
    inpainted = result_key(pair, "inpainted.png")
    # the very image this result.json names, for as long as the signing credentials allow
    link, expires_in = presign(s3, bucket, inpainted, expires_in, r.output_versions.get("inpainted"))
    keys = {"image": r.inputs.get("image_key"), "mask": r.inputs.get("mask_key"), "inpainted": inpainted,
            "preview": result_key(pair, "preview.png"), "result": key}
    keys.update({k: v for k, v in r.outputs.items() if isinstance(v, str) and k not in keys})  # e.g. uncertainty
    return Notice("succeeded", pair, None, keys, bucket, link, expires_in, r.timings, {"job_id": r.job_id}, ood=r.ood, model=r.model,
                  options=r.options, labels=r.labels, fell_back=r.fell_back, dedupe=f"{key}@{version}")


def from_model(s3: BaseClient, bucket: str, key: str, version: str | None = None) -> Notice:
    """models/<lab>/adapted.json -> "a model for <lab> is ready", or why the base model stays."""
    m = ModelReady.from_json(get_json(s3, bucket, key, version))
    ok = m.status == "ready"
    gain = f"{m.gain_db:+.2f} dB" if m.gain_db is not None else "no measured gain"
    reason = (f"a model for {m.lab} is ready: {gain} over the shipped model on your held-back images "
              f"({m.held_back} of {m.photos} photos); pairs under incoming/{m.lab}/ now use it" if ok else
              f"no new model for {m.lab}: it was {gain} against the model in use on your held-back images, which stays"
              if m.status == "not better" else f"no new model for {m.lab}: a model from newer photos of the lab is already in use")
    return Notice("succeeded" if ok else "failed", None, reason, {"model": (m.model or {}).get("key"), "record": key}, bucket,
                  job={"job_id": m.job_id, "lab": m.lab}, model=m.model, kind="model", dedupe=f"{key}@{version}")


def from_error(s3: BaseClient, bucket: str, key: str, version: str | None = None) -> Notice:
    """failed/<pair>/error.json -> a failure notice with the reason."""
    pair, _ = pair_from_output_key(key)
    doc = get_json(s3, bucket, key, version)
    keys = {k: v for k, v in (doc.get("keys") or {}).items() if v} if isinstance(doc.get("keys"), dict) else {}
    keys["error"] = key
    job = {k: doc[k] for k in ("job_id", "stage") if k in doc}
    reason = str(doc.get("reason") or "no reason was recorded")[:MAX_REASON]
    timings = doc.get("timings") if isinstance(doc.get("timings"), dict) else {}
    return Notice("failed", doc.get("pair") or pair, reason, keys, bucket, None, None, timings, job,
                  dedupe=f"{key}@{version}")


def from_batch_failure(s3: BaseClient, detail: dict) -> list[Notice]:
    """A Batch job that FAILED: one notice per pair of its manifest (an array child: of its work
    item) that has neither result.json nor error.json (the job may have finished some pairs before
    it died).

    Only the job that took the manifest speaks for its pairs (gpu_job/job.py takes it at start).
    The failure of a second job for the same manifest (a SubmitJob retried after a lost answer)
    says nothing about them: the first one is doing the work. A job that failed before it
    started (cancelled in RUNNABLE, image never pulled) takes the manifest here, in its own name,
    so that a copy of it still queued exits as a duplicate instead of restoring after we said failed."""
    array = detail.get("arrayProperties") or {}
    if "size" in array and "index" not in array:
        return []  # an array job's parent fails when a child does: each child speaks for its own work item
    item = array.get("index")
    reason = detail.get("statusReason") or "no reason given"
    exit_code = (detail.get("container") or {}).get("exitCode")
    job = {"batch_job_id": detail.get("jobId"), "job_name": detail.get("jobName"), "status_reason": reason,
           "exit_code": exit_code, "attempts": len(detail.get("attempts") or [])}
    if reason.startswith(RUNNABLE_CANCELLED):
        why = (f"no GPU capacity: the GPU job {detail.get('jobName')} waited in the queue longer than the stack allows "
               f"and was cancelled before it started ({reason}); nothing was restored. Upload the pair again later; "
               "if this keeps happening, the stack needs more GPU instance types, Spot off, or a higher EC2 quota")
    else:
        why = f"the GPU job {detail.get('jobName')} failed: {reason}" + (f" (exit code {exit_code})" if exit_code is not None else "")
    uri = (detail.get("parameters") or {}).get("manifest", "")
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.path.strip("/"):
        return [Notice("failed", None, why + "; its manifest is unknown", {}, None, job=job,
                       dedupe=f"batch@{detail.get('jobId')}")]
    bucket, manifest_key = parsed.netloc, parsed.path.lstrip("/")
    try:
        doc = get_json(s3, bucket, manifest_key)
    except ClientError as exc:
        return [Notice("failed", None, f"{why}; its manifest {uri} cannot be read ({exc.response['Error'].get('Code')})",
                       {"manifest": manifest_key}, bucket, job=job, dedupe=f"batch@{detail.get('jobId')}")]
    notices = _unanswered(s3, bucket, manifest_key, doc, item_of(doc, item), detail, why, job)
    # The manifests queued to it (shared/pipeline/runner.py): those it took and did not finish, and
    # those nobody took (taken here, in its name, so that no later job restores them after this).
    if detail.get("jobId"):
        for key in queued(s3, bucket, runner_of(detail["jobId"])):
            other = get_json(s3, bucket, key)
            n = len(items_of(other))
            for i in range(n) if n > 1 else [None]:
                notices += _unanswered(s3, bucket, key, other, i, detail, why, job)
    return notices


def _unanswered(s3: BaseClient, bucket: str, manifest_key: str, doc: dict, item: int | None, detail: dict, why: str,
                job: dict) -> list[Notice]:
    """A notice per pair of the manifest's work item `item` that the failed job took (or that
    nobody took) and left without result.json or error.json."""
    take = take_key(manifest_key, item)
    if detail.get("jobId") and acquire(s3, bucket, take, {"failed": detail.get("statusReason")}, None, owner=detail["jobId"]) is None:
        return []  # another job took this manifest (work item): it does (or did) the work, and reports it
    job = {**job, "job_id": doc.get("job_id")}
    notices = []
    start, end = items_of(doc)[item] if item is not None else (0, len(doc.get("pairs", [])))
    for p in doc.get("pairs", [])[start:end]:
        pair = p.get("pair")
        if written_by(s3, bucket, result_key(pair), doc.get("job_id")) or written_by(s3, bucket, error_key(pair), doc.get("job_id")):
            continue  # already reported by its own output (one from an older job does not count)
        keys = {"image": p.get("image_key"), "mask": p.get("mask_key"), "manifest": manifest_key}
        notices.append(Notice("failed", pair, why, keys, bucket, job=dict(job),
                              dedupe=f"batch@{detail.get('jobId')}@{pair}"))
    return notices


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def render(n: Notice) -> tuple[str, str]:
    """(subject, message) for sns.publish(MessageStructure="json")."""
    what = n.pair or (n.job.get("job_name") or "a job")
    subject = _ascii(f"cellpaint: {what} {'is restored' if n.status == 'succeeded' else 'failed'}")
    if n.kind == "model":
        lab = n.job.get("lab", "")
        subject = _ascii(f"cellpaint: a model for {lab} is ready" if n.status == "succeeded" else f"cellpaint: no new model for {lab}")
    elif n.kind == "folder":
        subject = _ascii(f"cellpaint: {n.job.get('folder')}: {n.job.get('done')} restored, {n.job.get('failed')} failed")
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 3] + "..."
    lines = [f"Pair: {n.pair or '(unknown)'}", f"Status: {n.status}"]
    if n.kind == "folder":
        lines = [n.reason or "", "", f"Summary: s3://{n.bucket}/{n.keys.get('summary')}"]
        if n.link:
            lines.append(f"Contact sheet ({_expiry(n.link_expires_in)}): {n.link}")
    elif n.kind == "model":
        lines = [n.reason or "", "", f"Record: s3://{n.bucket}/{n.keys.get('record')}"]
    elif n.status == "succeeded":
        if n.ood and n.ood.get("unlike_training"):
            lines += ["", f"Warning: {n.ood.get('message') or 'this image is unlike the training images; check the result'}"
                          f" (score {n.ood.get('score')}; above 1 = unlike)", ""]
        lines += [f"Restored image ({_expiry(n.link_expires_in)}): {n.link}",
                  f"In the bucket: s3://{n.bucket}/{n.keys.get('inpainted')}",
                  f"Preview: s3://{n.bucket}/{n.keys.get('preview')}"]
    else:
        lines += ["", f"Reason: {n.reason}", ""]
        if n.keys.get("error"):
            lines.append(f"Details: s3://{n.bucket}/{n.keys['error']}")
        lines.append("Add or replace photos under adapt/<lab>/; once the upload settles the lab's model is made again."
                     if (n.pair or "").startswith("adapt/") else "Fix the files and upload them again under incoming/; a new upload starts a new job.")
    for k in ("image", "mask"):
        if n.keys.get(k):
            lines.append(f"{k.capitalize()}: s3://{n.bucket}/{n.keys[k]}")
    if n.timings:
        lines.append("Timings: " + ", ".join(f"{k} {v}" for k, v in n.timings.items()))
    text = "\n".join(lines) + "\n"
    body = json.dumps(n.body(), default=str)
    # Machine subscribers (webhooks, queues, functions) get the JSON body; people get the text.
    return subject, json.dumps({"default": text, "email": text, "email-json": body, "http": body, "https": body,
                                "sqs": body, "lambda": body})


def _expiry(seconds: int | None) -> str:
    if not seconds:
        return "link"
    return f"link valid for {seconds // 3600} h" if seconds >= 3600 else f"link valid for {seconds // 60} min"


def attributes(n: Notice) -> dict:
    """What subscriptions filter on (template.yaml): kind (pair | folder | model), status, the
    folder of a pair that has one, and the lab (a lab's own subscription takes only its own). E-mail takes folder digests, model notices and the pairs that
    belong to no folder; webhooks take everything."""
    attrs = {"status": n.status, "kind": n.kind}
    folder = n.pair.rsplit("/", 1)[0] if n.kind == "pair" and n.pair and "/" in n.pair else None
    if folder:
        attrs["folder"] = folder
    # The lab: the first folder of the pair's key (incoming/<lab>/...), a digest's folder, a model's lab.
    where = n.pair if n.kind == "pair" else n.job.get("folder") or n.job.get("lab")
    if where and (n.kind != "pair" or "/" in where):
        parts = where.split("/")
        attrs["lab"] = parts[1] if parts[0] == "adapt" and len(parts) > 1 else parts[0]  # failed/adapt/<lab>/
    return {k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()}


def publish(sns: BaseClient, s3: BaseClient, bucket: str, topic_arn: str, n: Notice,
            now: datetime | None = None, lease_s: float = DEFAULT_LEASE_S, logger=None) -> str | None:
    """Publish once per notice (leased in jobs/claims/notify/), returning the MessageId, or None
    for a duplicate delivery. The lease is released if publishing fails, so the retry publishes."""
    now = now or now_utc()
    key = lease_key(NOTIFY_CLAIMS, n.dedupe or json.dumps(n.body(), sort_keys=True, default=str))
    lease = acquire(s3, bucket, key, {"notice": n.dedupe, "claimed": now.isoformat()}, lease_s, now=now)
    if lease is None:
        return None
    try:
        subject, message = render(n)
        message_id = sns.publish(TopicArn=topic_arn, Subject=subject, Message=message, MessageStructure="json",
                                 MessageAttributes=attributes(n))["MessageId"]
    except Exception:
        release_quietly(s3, bucket, lease, logger)
        raise
    try:
        finish(s3, bucket, lease, message_id=message_id)
    except Exception:  # noqa: BLE001 - published; raising would redeliver and publish twice
        if logger:
            logger.exception("published, but could not mark the lease done", extra={"lease": key})
    return message_id


def notices_for(s3: BaseClient, bucket: str, body: dict, expires_in: int, logger=None) -> list[Notice]:
    """The notices one queue message asks for: a result, an error, or a Batch job that FAILED.
    Anything else (another bucket, another key) is logged and ignored."""
    if body.get("source") == "aws.batch":
        if body.get("detail-type") != "Batch Job State Change" or (body.get("detail") or {}).get("status") != "FAILED":
            return []
        return from_batch_failure(s3, body["detail"])
    found = []
    for ev in object_events(body):
        parsed = pair_from_output_key(ev.key) if ev.bucket == bucket else None
        if ev.bucket == bucket and ev.key.startswith(MODELS) and ev.key.endswith("/adapted.json"):
            found.append(from_model(s3, bucket, ev.key, ev.version))
        elif parsed and parsed[1] == "succeeded":
            found.append(from_result(s3, bucket, ev.key, expires_in, ev.version))
        elif parsed:
            found.append(from_error(s3, bucket, ev.key, ev.version))
        elif logger:
            logger.warning("not a result or an error; ignored", extra={"bucket": ev.bucket, "key": ev.key})
    return found
