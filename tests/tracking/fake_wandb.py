"""Just enough of W&B's HTTP API for an online run to start, for the tests of
W&B going away mid-run. Run it with :func:`serve`; ``shutdown()`` takes it down."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeWandb(BaseHTTPRequestHandler):
    """Creates the run on ``UpsertBucket`` and accepts whatever else comes."""

    def do_POST(self) -> None:  # http.server calls it by this name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        query = json.loads(body) if body.startswith(b"{") else {}
        data = {}
        if query.get("operationName") == "UpsertBucket":
            v = query["variables"]
            data = {
                "upsertBucket": {
                    "inserted": True,
                    "bucket": {
                        "id": "b1",
                        "name": v.get("name") or "r1",
                        "displayName": "unit",
                        "project": {
                            "id": "p1",
                            "name": v.get("project") or "fedlight",
                            "entity": {"id": "e1", "name": v.get("entity") or "e"},
                        },
                        "historyLineCount": 0,
                        "eventsLineCount": 0,
                        "summaryMetrics": "{}",
                        "config": "{}",
                    },
                }
            }
        out = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args) -> None:
        pass


def serve() -> ThreadingHTTPServer:
    """Start a fake W&B on a free local port, in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeWandb)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
