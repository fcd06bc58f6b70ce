"""The bundled demo does what the README and run.sh say: routing, auth, rate limiting,
composition and transformation, with the demo's own upstream services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.demo import DEMO, start_demo_upstreams
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import wait_for

API_KEY = "demo-partner-key-0123456789abcdef"


@pytest.fixture(scope="module")
def demo() -> Iterator[GatewayProcess]:
    services, env = start_demo_upstreams("demo-secret-" + "x" * 40)
    try:
        gw = start_gateway(Path(DEMO / "gw.yaml").read_text(), extra_env=env)
        assert wait_for(lambda: _up(gw), timeout=10)
        yield gw
        gw.stop()
    finally:
        services.terminate()
        services.wait(timeout=10)


def _up(gw: GatewayProcess) -> bool:
    try:
        return requests.get(f"{gw.url}/api/products/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def login(gw: GatewayProcess) -> str:
    return str(requests.post(f"{gw.url}/api/auth/login", timeout=5).json()["token"])


def test_demo_routes_authenticates_and_forwards_identity(demo: GatewayProcess) -> None:
    assert requests.get(f"{demo.url}/api/orders/ord_x7k9", timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {login(demo)}", "X-User-Id": "admin"}
    response = requests.get(f"{demo.url}/api/orders/ord_x7k9", headers=auth, timeout=5)
    assert response.status_code == 200
    assert response.json()["order_id"] == "ord_x7k9"
    assert response.headers["X-Service-Saw-User"] == "usr_8a3f"
    partner = requests.get(f"{demo.url}/api/orders", headers={"X-API-Key": API_KEY}, timeout=5)
    assert partner.headers["X-Service-Saw-User"] == "acme-partner"


def test_demo_home_aggregates_and_transforms(demo: GatewayProcess) -> None:
    auth = {"Authorization": f"Bearer {login(demo)}"}
    home = requests.get(f"{demo.url}/api/home", headers=auth, timeout=5).json()
    assert list(home) == ["user", "recent_orders", "recommendations"]
    assert "internal_id" not in home["user"] and home["user"]["id"] == "usr_8a3f"
    user = requests.get(f"{demo.url}/api/users/usr_8a3f", headers=auth, timeout=5).json()
    assert user["email"] == "alice@example.com" and "db_shard" not in user


def test_demo_login_is_rate_limited(demo: GatewayProcess) -> None:
    statuses = [
        requests.post(f"{demo.url}/api/auth/login", timeout=5).status_code for _ in range(12)
    ]
    assert statuses.count(429) >= 2 and statuses[0] in (200, 429)
