"""One message per folder: when every pair of a folder under incoming/ has an answer, its digest
("lab1/2026-12-03: 200 restored, 3 failed (why), 12 flagged ...") with results/<folder>/summary.json
and a contact sheet of previews, failed and flagged first.

A folder has no end event, so each pair's answer (the notify function) schedules a check of its
folder, delayed CHECK_DELAY_S and at most one at a time; a check that finds pairs still pending
schedules the next. The check that finds none pending leases the folder's answers (which versions
of which pairs), so whatever is redelivered, each set of answers gets one digest: the folder's
digest goes out within about a minute of its last answer. A pair re-uploaded later makes a new
set, and a new digest once it is answered. Pairs at the top of incoming/ (no folder) get their own
message only.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from botocore.client import BaseClient

from shared.pipeline.leases import Sent, acquire, finish, release_quietly, schedule_once
from shared.pipeline.records import FolderSummary, Notice
from shared.pipeline.s3 import CLAIMS, RESULTS, digest, put_json, result_key
from shared.pipeline.status import FolderStatus, first_unanswered, folder_status

CHECK_DELAY_S = 60  # a check comes back after this: the digest follows the last answer within about a minute
LEASE_S = 120
SHEET_TILES = 48  # previews on a contact sheet (failed and flagged first); summary.json lists every pair
TILE_H = 96


def folder_of(pair: str | None) -> str | None:
    return pair.rsplit("/", 1)[0] if pair and "/" in pair else None


def schedule(s3: BaseClient, sqs: BaseClient, bucket: str, folder: str, queue_url: str, sent: Sent | None = None) -> bool:
    """A pair of `folder` was answered: one check of the folder on its way (False: one already is)."""
    return schedule_once(s3, bucket, f"{CLAIMS}digest/{digest(folder)[:24]}/scheduled.json", {"folder": folder}, CHECK_DELAY_S,
                         lambda: sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"digest_check": folder}),
                                                  DelaySeconds=CHECK_DELAY_S), sent)


def check(s3: BaseClient, sqs: BaseClient, bucket: str, folder: str, queue_url: str, start: str = "") -> tuple[str, Notice | None]:
    """("pending", None) after scheduling the next check; ("already", None) for a set of answers
    digested before; ("digest", notice) with summary.json and the contact sheet written. `start`:
    the pair the last check stopped at (the pairs before it had answers then)."""
    # While pairs have no answer at all, the listings say so: no result.json is read until they might all be answered.
    resume = first_unanswered(s3, bucket, folder, start)
    st = None if resume is not None else folder_status(s3, bucket, folder)
    if st is None or not st.finished:  # the exact status found one pending (a re-upload): the next check reads it all
        body = {"digest_check": folder, **({"from": resume} if resume else {})}
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body), DelaySeconds=CHECK_DELAY_S)
        return "pending", None
    answers = digest(*[f"{p.pair}@{p.result.inputs if p.result else p.error_key}" for p in st.pairs])[:16]
    lease = acquire(s3, bucket, f"{CLAIMS}digest/{digest(folder)[:24]}/{answers}.json", {"folder": folder}, LEASE_S)
    if lease is None:
        return "already", None
    try:
        summary = summarise(st)
        summary.contact_sheet = contact_sheet(s3, bucket, st)
        put_json(s3, bucket, result_key(folder, "summary.json"), summary.to_json())
    except Exception:
        release_quietly(s3, bucket, lease)
        raise
    finish(s3, bucket, lease)
    return "digest", notice(bucket, summary, answers)


def summarise(st: FolderStatus) -> FolderSummary:
    rows = []
    for p in st.pairs:
        r = p.result
        flagged = bool(r and r.ood and r.ood.get("unlike_training"))
        rows.append({"pair": p.pair, "status": "failed" if p.state == "failed" else "succeeded", "reason": p.detail or None,
                     "keys": {"error": p.error_key} if p.error_key else {**r.outputs, "result": result_key(p.pair)},
                     "flagged": flagged, "fell_back": r.fell_back if r else None, "model": (r.model or {}).get("sha256") if r else None})
    rows.sort(key=lambda x: (x["status"] != "failed", not x["flagged"], x["pair"]))
    counts = {"done": st.count("done"), "failed": st.count("failed"), "flagged": sum(x["flagged"] for x in rows)}
    return FolderSummary(st.folder, counts, rows, time=datetime.now(timezone.utc).isoformat())


def contact_sheet(s3: BaseClient, bucket: str, st: FolderStatus) -> str | None:
    """results/<folder>/contact-sheet.png: the previews in rows of 6, failed (a grey tile) and
    flagged first. numpy and Pillow are loaded here only: the notify function never needs them."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    from shared.imaging.images import png_bytes
    from shared.imaging.preview import grid

    rows = summarise(st).pairs[:SHEET_TILES]
    tiles = []
    for x in rows:
        if x["status"] == "failed":
            img = Image.new("RGB", (3 * TILE_H, TILE_H), (200, 200, 200))
            ImageDraw.Draw(img).text((6, 6), f"FAILED\n{x['pair'][-40:]}\n{(x['reason'] or '')[:40]}", fill=(120, 0, 0))
        else:
            body = s3.get_object(Bucket=bucket, Key=x["keys"]["preview"])["Body"].read()
            img = Image.open(io.BytesIO(body)).convert("RGB")
            img = img.resize((max(1, img.width * TILE_H // img.height), TILE_H))
            if x["flagged"]:
                ImageDraw.Draw(img).rectangle([0, 0, img.width - 1, img.height - 1], outline=(255, 140, 0), width=4)
        tiles.append(np.asarray(img))
    if not tiles:
        return None
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    rows_of = [tiles[i:i + 6] + [np.full_like(tiles[0], 255)] * (6 - len(tiles[i:i + 6])) for i in range(0, len(tiles), 6)]
    key = result_key(st.folder, "contact-sheet.png")
    s3.put_object(Bucket=bucket, Key=key, Body=png_bytes(grid(rows_of)), ContentType="image/png")
    return key


def notice(bucket: str, s: FolderSummary, answers: str) -> Notice:
    c = s.counts
    reasons = sorted({x["reason"] for x in s.pairs if x["status"] == "failed" and x["reason"]})
    why = f" ({'; '.join(r[:80] for r in reasons[:3])}{'; ...' if len(reasons) > 3 else ''})" if reasons else ""
    text = (f"{s.folder}: {c['done']} restored, {c['failed']} failed{why}, {c['flagged']} flagged unlike the training images; "
            f"results in s3://{bucket}/{RESULTS}{s.folder}/")
    keys = {"summary": result_key(s.folder, "summary.json"), **({"contact_sheet": s.contact_sheet} if s.contact_sheet else {})}
    return Notice("failed" if c["failed"] else "succeeded", None, text, keys, bucket, job={"folder": s.folder, **c},
                  kind="folder", dedupe=f"digest:{s.folder}:{answers}")
