"""Three small demo services (users, orders, products) with seed 003's data.

Run: python examples/demo/upstreams.py [--users 3001 --orders 3002 --products 3003]
Each answers JSON, and says in ``X-Service-Saw-User`` which user the gateway told it about.
The users service returns internal fields the gateway's transformation removes.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USERS = {
    "usr_8a3f": {
        "id": "usr_8a3f",
        "name": "Alice Chen",
        "avatar_url": "https://cdn.example.com/avatars/usr_8a3f.jpg",
        "membership": "premium",
        "email_address": "alice@example.com",
        "internal_id": 91823,
        "db_shard": "users-03",
        "feature_flags": ["new-checkout"],
        "created_by_admin": False,
    },
}
ORDERS = [
    {
        "order_id": "ord_x7k9",
        "status": "shipped",
        "total": 49.98,
        "created_at": "2026-04-10T14:32:00Z",
    },
    {
        "order_id": "ord_w2m1",
        "status": "delivered",
        "total": 129.00,
        "created_at": "2026-04-05T09:15:00Z",
    },
    {
        "order_id": "ord_p4n8",
        "status": "delivered",
        "total": 34.50,
        "created_at": "2026-03-28T18:42:00Z",
    },
]
PRODUCTS = [
    {"product_id": "prod_k3j7", "name": "Wireless Keyboard Pro", "price": 79.99, "score": 0.94},
    {"product_id": "prod_m9r2", "name": "USB-C Hub 7-in-1", "price": 45.00, "score": 0.87},
]


def login() -> dict[str, Any]:
    """Play the identity provider: a 15-minute HS256 token for Alice (demo only)."""
    import jwt  # PyJWT, installed with gw

    now = int(time.time())
    claims = {
        "iss": "https://auth.demo.local",
        "aud": "api.demo.local",
        "sub": "usr_8a3f",
        "role": "customer",
        "iat": now,
        "exp": now + 900,
    }
    return {"token": jwt.encode(claims, os.environ["JWT_SECRET"], algorithm="HS256")}


def users(path: str) -> tuple[int, Any]:
    if path == "/api/auth/login":
        return 200, login()
    parts = path.strip("/").split("/")
    if parts == ["users"]:
        return 200, list(USERS.values())
    if len(parts) == 2 and parts[0] == "users":
        user = USERS.get(parts[1])
        return (200, user) if user else (404, {"error": "not_found", "message": "no such user"})
    return 404, {"error": "not_found", "message": path}


def orders(path: str) -> tuple[int, Any]:
    parts = path.strip("/").split("/")
    if parts == ["orders"]:
        return 200, ORDERS
    if len(parts) == 2 and parts[0] == "orders":
        found = [o for o in ORDERS if o["order_id"] == parts[1]]
        return (
            (200, found[0]) if found else (404, {"error": "not_found", "message": "no such order"})
        )
    return 404, {"error": "not_found", "message": path}


def products(path: str) -> tuple[int, Any]:
    if path.rstrip("/") == "/products" or path.startswith("/recommendations"):
        return 200, PRODUCTS
    return 404, {"error": "not_found", "message": path}


def _handler(name: str, app: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # keep-alive: head and body are two writes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, payload = app(self.path.split("?")[0])
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            # Show a newcomer what the gateway told this service about the caller.
            self.send_header("X-Service", name)
            self.send_header("X-Service-Saw-User", self.headers.get("X-User-Id") or "-")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=3001)
    parser.add_argument("--orders", type=int, default=3002)
    parser.add_argument("--products", type=int, default=3003)
    args = parser.parse_args()
    services = [
        ("users", args.users, users),
        ("orders", args.orders, orders),
        ("products", args.products, products),
    ]
    servers = [
        ThreadingHTTPServer(("127.0.0.1", port), _handler(name, app))
        for name, port, app in services
    ]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(
        "demo upstreams: " + ", ".join(f"{n} on 127.0.0.1:{p}" for n, p, _ in services), flush=True
    )
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
