"""A local HTTP webhook: what an SNS http(s) subscription posts to. It confirms a subscription
(GET SubscribeURL, as a real endpoint must), and logs and shows every notification."""
from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Receiver:
    def __init__(self, log_path: Path, on_message=None):
        self.log_path = Path(log_path)
        self.on_message = on_message  # called with each parsed notification
        self.messages: list[dict] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    receiver.receive(json.loads(raw), self.headers.get("x-amz-sns-message-type"))
                except ValueError:
                    self.send_response(400)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # the receiver logs notifications, not requests
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sns"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def start(self) -> "Receiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def receive(self, envelope: dict, kind: str | None = None) -> None:
        kind = envelope.get("Type") or kind
        if kind == "SubscriptionConfirmation":
            urllib.request.urlopen(envelope["SubscribeURL"], timeout=10).read()
            return
        if kind != "Notification":
            return
        try:  # MessageStructure=json: an http subscriber gets the "http" part, a JSON body
            body = json.loads(envelope["Message"])
        except ValueError:
            body = {"text": envelope["Message"]}
        msg = {"message_id": envelope.get("MessageId"), "subject": envelope.get("Subject"),
               "timestamp": envelope.get("Timestamp"), "body": body}
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
