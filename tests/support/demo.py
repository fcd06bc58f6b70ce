"""The demo's upstream services (``examples/demo/upstreams.py``) on ports nobody else holds."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.gateway import ROOT, free_port

DEMO = ROOT / "examples" / "demo"


def start_demo_upstreams(
    jwt_secret: str, attempts: int = 5
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start the demo's three services (its login signs tokens with ``jwt_secret``); return
    the process and the environment the gateway needs too (``DEMO_*_PORT``, ``JWT_SECRET``).

    A port ``free_port`` found free can be handed out again before the services bind it (as
    the local port of another test's connection): the services then exit at once, and they
    are started again on other ports (a CI run failed five tests on "Address already in use").
    """
    for _ in range(attempts):
        ports = {name: str(free_port()) for name in ("users", "orders", "products")}
        env = {f"DEMO_{name.upper()}_PORT": port for name, port in ports.items()}
        env["JWT_SECRET"] = jwt_secret
        services = subprocess.Popen(
            [sys.executable, str(DEMO / "upstreams.py"), *[f"--{k}={v}" for k, v in ports.items()]],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert services.stdout is not None
        # The one line the services print, once all three listen; "" when they exited.
        started = services.stdout.readline().startswith("demo upstreams:")
        services.stdout.close()  # nothing else is printed there
        if started:
            return services, env
        services.wait(timeout=10)
    raise RuntimeError(f"the demo's services found no free ports in {attempts} attempts")
