"""The JWKS endpoint for the RS256 row: a thread in the harness serving one static document.

gw fetches the key set once per worker and caches it for the whole run
(``jwks_cache_seconds``), so this thread sits idle in ``accept`` while wrk runs and costs
the measurement nothing; no extra process shares the cores.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JWKS_PATH = "/.well-known/jwks.json"


class KeyServer:
    """Serve ``document`` as JSON at ``JWKS_PATH`` on 127.0.0.1, on a fresh port."""

    def __init__(self, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == JWKS_PATH
                if found:
                    owner.fetches += 1
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="bench-jwks", daemon=True
        )

    @property
    def url(self) -> str:
        """Return the key set's URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{JWKS_PATH}"

    def start(self) -> KeyServer:
        """Start serving in a daemon thread; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
