"""The demo's services start on free ports even when a port found free is taken first."""

from __future__ import annotations

import socket

import pytest

from tests.support import demo

pytestmark = pytest.mark.integration


def test_the_services_start_again_on_other_ports_when_one_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        handed = iter([port])  # the first port "found free" is already someone's
        real = demo.free_port
        monkeypatch.setattr(demo, "free_port", lambda: next(handed, None) or real())
        services, env = demo.start_demo_upstreams("demo-secret-" + "x" * 40)
        try:
            assert services.poll() is None
            assert str(port) not in env.values() and "DEMO_USERS_PORT" in env
            with socket.create_connection(("127.0.0.1", int(env["DEMO_USERS_PORT"])), timeout=2):
                pass
        finally:
            services.terminate()
            services.wait(timeout=10)
