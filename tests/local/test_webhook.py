"""The local stack's webhook receiver (cellpaint/local/webhook.py) over real HTTP: it confirms a
subscription only for its own topic and only on the local stack's endpoint, follows nothing
else, and answers malformed bodies with 400. The "endpoint" and the other hosts are Recorders, so
the tests see every request the receiver makes."""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from cellpaint.local.webhook import Receiver
from tests.recorder import Recorder

TOPIC = "arn:aws:sns:us-east-1:123456789012:cellpaint-Topic"


@pytest.fixture
def endpoint():
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def elsewhere():
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def receiver(tmp_path, endpoint):
    r = Receiver(tmp_path / "notifications.jsonl", endpoint.url).start()
    r.expect_topic(TOPIC)
    yield r
    r.stop()


def post(receiver: Receiver, body: bytes | dict | list, headers: dict | None = None) -> int:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    u = urlsplit(receiver.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("POST", u.path, body=raw, headers={"Content-Type": "text/plain", **(headers or {})})
        return conn.getresponse().status
    finally:
        conn.close()


def confirmation(url: str, topic: str = TOPIC) -> dict:
    return {"Type": "SubscriptionConfirmation", "MessageId": "m1", "Token": "t0ken", "TopicArn": topic,
            "Message": "You have chosen to subscribe", "SubscribeURL": url, "Timestamp": "2026-01-01T00:00:00Z"}


def notification(topic: str = TOPIC, message: str = '{"pair": "cell", "status": "succeeded"}') -> dict:
    return {"Type": "Notification", "MessageId": "m2", "TopicArn": topic, "Subject": "done", "Message": message,
            "Timestamp": "2026-01-01T00:00:00Z"}


def test_genuine_confirmation_is_fetched_on_the_local_endpoint(receiver, endpoint):
    url = f"{endpoint.url}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t0ken"
    assert post(receiver, confirmation(url)) == 200
    assert endpoint.seen == [("GET", f"/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=t0ken")]


def test_forged_confirmation_for_another_topic_is_refused(receiver, endpoint):
    other = "arn:aws:sns:us-east-1:999999999999:attacker"
    assert post(receiver, confirmation(f"{endpoint.url}/?Action=ConfirmSubscription", other)) == 403
    assert endpoint.seen == [] and "is not the local stack's topic" in receiver.refusals[-1]


def test_nothing_is_trusted_before_the_topic_exists(tmp_path, endpoint):
    r = Receiver(tmp_path / "n.jsonl", endpoint.url).start()
    try:
        assert post(r, confirmation(f"{endpoint.url}/")) == 403
        assert post(r, notification()) == 403
    finally:
        r.stop()
    assert endpoint.seen == [] and r.messages == []


@pytest.mark.parametrize("make_url", [
    lambda ep, other: f"{other.url}/?Action=ConfirmSubscription",  # another port on this machine
    lambda ep, other: ep.url.replace("127.0.0.1", "localhost") + "/",  # the same server under another name
    lambda ep, other: ep.url.replace("http://", "https://") + "/",  # another scheme
    lambda ep, other: "file:///etc/passwd",
    lambda ep, other: "ftp://127.0.0.1/x",
    lambda ep, other: f"{ep.url}@{urlsplit(other.url).netloc}/",  # userinfo trick: the host is `other`
    lambda ep, other: "http://169.254.169.254/latest/meta-data/",
    lambda ep, other: ep.url + "\t/",
])
def test_subscribe_url_elsewhere_is_never_fetched(receiver, endpoint, elsewhere, make_url):
    url = make_url(endpoint, elsewhere)
    assert post(receiver, confirmation(url)) == 403
    assert endpoint.seen == [] and elsewhere.seen == []
    assert "not on the local stack's endpoint" in receiver.refusals[-1]


def test_a_redirect_is_not_followed(receiver, endpoint, elsewhere):
    redirect = {"/moved": f"{elsewhere.url}/stolen"}
    moved = Recorder(redirects=redirect)
    try:
        r = Receiver(receiver.log_path, moved.url).start()
        r.expect_topic(TOPIC)
        try:
            assert post(r, confirmation(f"{moved.url}/moved")) == 502
        finally:
            r.stop()
    finally:
        moved.close()
    assert moved.seen == [("GET", "/moved")] and elsewhere.seen == []


def test_notifications_of_the_topic_are_recorded_others_refused(receiver):
    assert post(receiver, notification()) == 200
    assert post(receiver, notification("arn:aws:sns:us-east-1:999999999999:attacker")) == 403
    assert post(receiver, notification(message="plain text")) == 200
    assert post(receiver, notification(message="[1, 2]")) == 200  # JSON, but not an object: kept as text
    assert [m["body"] for m in receiver.messages] == [{"pair": "cell", "status": "succeeded"}, {"text": "plain text"},
                                                      {"text": "[1, 2]"}]
    logged = [json.loads(line) for line in receiver.log_path.read_text().splitlines()]
    assert [m["body"] for m in logged] == [m["body"] for m in receiver.messages]


@pytest.mark.parametrize("body", [
    b"not json", b"", b"\xff\xfe\x00", b"[1, 2]", b'"a string"', b"null", b"{}", b"[" * 100_000,
    {"Type": "SubscriptionConfirmation", "TopicArn": TOPIC},  # no SubscribeURL
    {"Type": "SubscriptionConfirmation", "TopicArn": TOPIC, "SubscribeURL": 42},
    {"Type": "Notification", "TopicArn": TOPIC},  # no Message
    {"Type": "Notification", "TopicArn": TOPIC, "Message": {"pair": "x"}},
    {"Type": "Notification", "Message": "x"},  # no TopicArn
    {"Type": ["Notification"], "TopicArn": TOPIC, "Message": "x"},
    {"Type": "Gossip", "TopicArn": TOPIC, "Message": "x"},
])
def test_malformed_bodies_are_400(receiver, endpoint, body):
    assert post(receiver, body) == 400
    assert endpoint.seen == [] and receiver.messages == []
    assert not any(r.startswith("500") for r in receiver.refusals)


def test_message_type_header_is_used_when_the_body_has_none(receiver):
    body = {k: v for k, v in notification().items() if k != "Type"}
    assert post(receiver, body, {"x-amz-sns-message-type": "Notification"}) == 200
    assert post(receiver, body) == 400


def test_bodies_without_a_usable_length_are_refused(receiver):
    u = urlsplit(receiver.url)
    for headers, expected in (({"Content-Length": str(2 << 20)}, 413), ({"Content-Length": "-1"}, 413),
                              ({"Content-Length": "ten"}, 400)):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        try:
            conn.putrequest("POST", u.path)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            assert conn.getresponse().status == expected, headers
        finally:
            conn.close()
    assert post(receiver, notification()) == 200  # still serving
