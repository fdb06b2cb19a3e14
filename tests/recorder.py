"""A plain HTTP server that records every request it gets: what a test points a URL at to see
whether the code under test sent anything there."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorder:
    """Listens on host:any port; `seen` holds (method, path) of each request. Answers `status`, or
    a 302 to redirects[path]."""

    def __init__(self, host: str = "127.0.0.1", status: int = 200, redirects: dict[str, str] | None = None):
        self.seen: list[tuple[str, str]] = []
        recorder, redirects = self, redirects or {}

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                recorder.seen.append((self.command, self.path))
                self.send_response(302 if self.path in redirects else status)
                if self.path in redirects:
                    self.send_header("Location", redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = do_HEAD = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
