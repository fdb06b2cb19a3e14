"""The S3 events the stack delivers, as plain data (no AWS calls). The bucket's layout is shared/pipeline/s3.py."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str  # URL-decoded
    version: str | None  # None when the bucket is not versioned
    etag: str


def is_test_event(body: dict) -> bool:
    """S3 sends one `s3:TestEvent` when a notification is configured; it names no object."""
    return body.get("Event") == "s3:TestEvent"


def object_events(body: dict) -> list[ObjectEvent]:
    """Object-created events in one S3 notification (as SQS delivers it) or one EventBridge
    "Object Created" event. Keys in S3 notifications are URL-encoded ('+' is a space)."""
    if is_test_event(body):
        return []
    if body.get("detail-type") == "Object Created":  # EventBridge form: keys are not encoded
        d = body["detail"]
        return [ObjectEvent(d["bucket"]["name"], d["object"]["key"], d["object"].get("version-id"),
                            d["object"].get("etag", ""))]
    events = []
    for rec in body.get("Records", []):
        if not str(rec.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        obj = rec["s3"]["object"]
        events.append(ObjectEvent(rec["s3"]["bucket"]["name"], unquote_plus(obj["key"]),
                                  obj.get("versionId"), obj.get("eTag", "")))
    return events
