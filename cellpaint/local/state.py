"""--state DIR: moto keeps nothing when it stops, so the bucket is mirrored to DIR/bucket/ (the
current version of every object, with its content type) while the stack runs and when it stops,
and put back before the bucket's notifications are set up on the next start, so restored objects
trigger nothing. Version history, queued messages and the Batch job list are not kept.
DIR/notifications.jsonl (the webhook's log) and DIR/logs/ simply stay."""
from __future__ import annotations

import json
from pathlib import Path


class BucketMirror:
    def __init__(self, folder: Path):
        self.root = Path(folder) / "bucket"
        self.index_path = Path(folder) / "bucket.json"
        self.index = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}

    def restore(self, s3, bucket: str) -> int:
        for key, meta in self.index.items():
            path = self.root / key
            if path.is_file():
                s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType=meta.get("content_type") or "binary/octet-stream")
        return len(self.index)

    def save(self, s3, bucket: str) -> int:
        """Copy what changed since the last save; forget what was deleted. Returns objects copied."""
        now, copied = {}, 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                key, etag = obj["Key"], obj["ETag"]
                if key.endswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
                    continue  # a folder marker or a key that is not a safe path: not mirrored
                old = self.index.get(key)
                if old and old["etag"] == etag and (self.root / key).is_file():
                    now[key] = old
                    continue
                r = s3.get_object(Bucket=bucket, Key=key)
                path = self.root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(r["Body"].read())
                now[key] = {"etag": etag, "content_type": r.get("ContentType")}
                copied += 1
        for key in set(self.index) - set(now):
            (self.root / key).unlink(missing_ok=True)
        if copied or set(self.index) != set(now):
            self.index = now
            tmp = self.index_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(now, indent=1))
            tmp.replace(self.index_path)
        return copied
