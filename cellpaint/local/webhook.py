"""A local HTTP webhook: what an SNS http(s) subscription posts to. It logs and shows every
notification of the local stack's topic, and confirms a subscription (GET SubscribeURL, as a real
endpoint must) only for that topic and only on the local stack's own endpoint.

Anyone on this machine can post to it, so nothing in a body is trusted: a confirmation from another
topic, or whose SubscribeURL is on another host, port or scheme, is refused (403) and nothing is
fetched; a body that is not an SNS message is answered 400. moto signs notifications but does not
serve its certificate where a receiver would fetch it, so signatures are not checked here; a lab's
own receiver must check them (docs/pipeline.md, examples/webhook/verify_sns.py).
"""
from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cellpaint.endpoints import origin

MAX_BODY = 1 << 20  # an SNS message is at most 256 KiB; its envelope adds a few KiB


class Refused(Exception):
    """A request the receiver does not act on: the HTTP status and why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect could lead to any host: never follow it
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _text(envelope: dict, key: str) -> str:
    value = envelope.get(key)
    if not isinstance(value, str):
        raise Refused(400, f"{key} is missing or not a string")
    return value


class Receiver:
    def __init__(self, log_path: Path, endpoint: str, on_message=None):
        self.log_path = Path(log_path)
        self.endpoint = origin(endpoint)  # the local stack's AWS endpoint: the only host a SubscribeURL may name
        if self.endpoint is None:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.topic_arn: str | None = None  # set once the stack's topic exists (expect_topic); until then all is refused
        self.on_message = on_message  # called with each parsed notification
        self.messages: list[dict] = []
        self.refusals: list[str] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                try:
                    receiver.receive(self._body(), self.headers.get("x-amz-sns-message-type"))
                    status = 200
                except Refused as exc:
                    status = exc.status
                    receiver.refusals.append(f"{status} {exc}")
                except Exception as exc:  # noqa: BLE001 - a bug here answers 500, never drops the connection
                    status = 500
                    receiver.refusals.append(f"500 {type(exc).__name__}: {exc}")
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _body(self):
                try:
                    length = int(self.headers.get("Content-Length") or "")
                except ValueError:
                    raise Refused(411 if self.headers.get("Content-Length") is None else 400, "no valid Content-Length") from None
                if not 0 <= length <= MAX_BODY:
                    raise Refused(413, f"Content-Length {length} is outside 0..{MAX_BODY}")
                try:
                    return json.loads(self.rfile.read(length))
                except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                    raise Refused(400, f"the body is not JSON: {exc}") from None

            def log_message(self, *args):  # the receiver logs notifications, not requests
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sns"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def expect_topic(self, topic_arn: str) -> None:
        self.topic_arn = topic_arn

    def start(self) -> "Receiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def receive(self, envelope: object, kind: str | None = None) -> None:
        """Act on one posted message, or raise Refused."""
        if not isinstance(envelope, dict):
            raise Refused(400, f"the body is a JSON {type(envelope).__name__}, not an SNS message object")
        kind = envelope.get("Type") or kind
        if kind not in ("SubscriptionConfirmation", "UnsubscribeConfirmation", "Notification"):
            raise Refused(400, f"unknown message Type {kind!r}")
        topic = _text(envelope, "TopicArn")
        if self.topic_arn is None or topic != self.topic_arn:
            raise Refused(403, f"TopicArn {topic!r} is not the local stack's topic")
        if kind == "SubscriptionConfirmation":
            self.confirm(_text(envelope, "SubscribeURL"))
        elif kind == "Notification":
            self.record(envelope, _text(envelope, "Message"))

    def confirm(self, url: str) -> None:
        if origin(url) != self.endpoint:
            raise Refused(403, f"SubscribeURL {url!r} is not on the local stack's endpoint")
        try:
            with _opener.open(url, timeout=10) as response:
                response.read(65536)
        except OSError as exc:  # HTTPError (a redirect among them) and connection errors
            raise Refused(502, f"confirming the subscription failed: {exc}") from exc

    def record(self, envelope: dict, message: str) -> None:
        try:  # MessageStructure=json: an http subscriber gets the "http" part, a JSON body
            body = json.loads(message)
        except ValueError:
            body = None
        msg = {"message_id": envelope.get("MessageId"), "subject": envelope.get("Subject"),
               "timestamp": envelope.get("Timestamp"), "body": body if isinstance(body, dict) else {"text": message}}
        with self.changed:
            with self.log_path.open("a") as f:
                f.write(json.dumps(msg) + "\n")
            self.messages.append(msg)
            self.changed.notify_all()
        if self.on_message:
            self.on_message(msg)

    def wait_for(self, predicate, timeout: float) -> dict | None:
        """The first message (received so far or later) for which predicate(msg) is true."""
        with self.changed:
            found = []
            self.changed.wait_for(lambda: found.extend(m for m in self.messages if predicate(m)) or found, timeout)
            return found[0] if found else None
