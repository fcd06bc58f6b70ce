"""The deploy/ files work as shipped.

Real nginx running the drop-in (only its socket path and listen port substituted) in front of
real gunicorn on a unix socket, in front of a recording upstream; ``deploy/gw-reload`` against
a running master; the unit files checked by ``systemd-analyze``. Everything lives in a tmp dir
and talks over 127.0.0.1 or unix sockets.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from gw.config.settings import ServerSettings
from gw.edge.arbiter import DEFAULT_DRAIN_TIMEOUT
from tests.support.gateway import ROOT, GatewayProcess, free_port, start_gateway
from tests.support.upstream import Received, Upstream, start_upstream, wait_for

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy"
SHIPPED_SOCKET = "unix:/run/gw/gw.sock"
SHIPPED_LISTEN = "listen 80;"
MIB = 1024 * 1024


# -- tools ------------------------------------------------------------------------------------


def require_tool(name: str, package: str, *, fail_on_ci: bool) -> str:
    """Return the tool's path; skip without it (fail instead on CI where it must exist)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path:
        return path
    reason = f"{name} is not installed (apt-get install {package})"
    if fail_on_ci and os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true requires it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    return require_tool("nginx", "nginx", fail_on_ci=True)


# -- nginx with the shipped drop-in -----------------------------------------------------------


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def substitute_once(text: str, old: str, new: str) -> str:
    """Replace the one occurrence of ``old``; fail if the shipped file no longer has exactly one."""
    assert text.count(old) == 1, f"deploy/nginx/gw.conf must contain {old!r} exactly once"
    return text.replace(old, new)


def drop_in_for(sock: Path, port: int) -> str:
    """Return deploy/nginx/gw.conf with only the socket path and the listen port changed."""
    text = (DEPLOY / "nginx" / "gw.conf").read_text()
    text = substitute_once(text, SHIPPED_SOCKET, f"unix:{sock}")
    return substitute_once(text, SHIPPED_LISTEN, f"listen 127.0.0.1:{port};")


def nginx_main_conf(directory: Path) -> str:
    # As root, nginx workers would switch to "nobody", who cannot enter pytest's 0700 tmp dirs.
    user = "user root root;" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {directory}/temp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}
worker_processes 1;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
{temp}
    include {directory}/gw.conf;
}}
"""


def start_nginx(nginx_bin: str, directory: Path, sock: Path) -> Nginx:
    """Start nginx in the foreground with the shipped drop-in pointed at ``sock``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    port = free_port()
    (directory / "gw.conf").write_text(drop_in_for(sock, port))
    (directory / "nginx.conf").write_text(nginx_main_conf(directory))
    command = [
        nginx_bin,
        "-p", f"{directory}/",
        "-e", str(directory / "error.log"),
        "-c", str(directory / "nginx.conf"),
        "-g", f"daemon off; pid {directory}/nginx.pid;",
    ]  # fmt: skip
    with open(directory / "nginx.out", "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    nginx = Nginx(proc, port, directory)
    _wait_listening(nginx)
    return nginx


def _wait_listening(nginx: Nginx, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nginx.proc.poll() is not None:
            out = (nginx.directory / "nginx.out").read_text(errors="replace")
            raise RuntimeError(f"nginx exited:\n{out}\n{nginx.error_log()}")
        try:
            socket.create_connection(("127.0.0.1", nginx.port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    nginx.stop()
    raise RuntimeError(f"nginx did not listen:\n{nginx.error_log()}")


def wait_healthy_through(nginx: Nginx, gateway: GatewayProcess, timeout: float = 20.0) -> None:
    """Poll /health through nginx until gunicorn answers it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{gateway.log_text()}")
        try:
            if requests.get(f"{nginx.url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no healthy gw behind nginx:\n{nginx.error_log()}\n{gateway.log_text()}")


# -- the gateway config -----------------------------------------------------------------------


def shipped_server_block() -> dict[str, Any]:
    """Return the ``server:`` block of deploy/gw.example.yaml, unchanged."""
    data = yaml.safe_load((DEPLOY / "gw.example.yaml").read_text())
    return dict(data["server"])


def config_for(upstream: Upstream, *routes: dict[str, Any]) -> dict[str, Any]:
    """The shipped server block, one upstream, and ``routes`` (default: /svc/** -> /**)."""
    default = {"name": "svc", "path": "/svc/**", "upstream": "svc", "strip_prefix": "/svc"}
    return {
        "server": shipped_server_block(),
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": list(routes) or [default],
    }


def received_for(upstream: Upstream, response: requests.Response) -> Received:
    """Return what the upstream received for ``response`` (matched by request id)."""
    request_id = response.headers["X-Request-Id"]
    with upstream.lock:
        matches = [r for r in upstream.received if r.header("X-Request-Id") == request_id]
    assert len(matches) == 1, f"upstream saw {len(matches)} requests with id {request_id}"
    return matches[0]


def access_line(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    """Return gw's JSON access line for ``request_id`` (written when the body is done)."""
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [x for x in gateway.access_lines() if x.get("request_id") == request_id]
        return bool(found)

    assert wait_for(logged, timeout=5), f"no access line for {request_id}"
    return found[0]


# -- 1. nginx -> gunicorn (unix socket) -> upstream -------------------------------------------


@dataclass
class Stack:
    nginx: Nginx
    gateway: GatewayProcess
    upstream: Upstream


@pytest.fixture(scope="module")
def stack(nginx_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("deploy-stack")
    sock = directory / "gw.sock"
    upstream = start_upstream()
    config = config_for(upstream)
    # Seed 003's login limiter, keyed by the client address gw resolves behind nginx.
    login = {"path": "/svc/auth/login", "requests_per_minute": 10, "key": "client_ip"}
    config["rate_limiting"] = {"overrides": [login]}
    gateway = start_gateway(config, bind=f"unix:{sock}", wait=False)
    nginx = None
    try:
        nginx = start_nginx(nginx_bin, directory / "nginx", sock)
        wait_healthy_through(nginx, gateway)
        yield Stack(nginx, gateway, upstream)
    finally:
        if nginx is not None:
            nginx.stop()
        gateway.stop()
        upstream.close()


def test_request_through_nginx_reaches_upstream_as_the_real_client(stack: Stack) -> None:
    response = requests.get(f"{stack.nginx.url}/svc/items/42?page=2", timeout=10)
    assert response.status_code == 200
    seen = received_for(stack.upstream, response)
    assert seen.target == "/items/42?page=2"
    # The client as gw resolved it: the TCP peer nginx saw, not the unix socket.
    assert seen.header("X-Real-IP") == "127.0.0.1"
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    line = access_line(stack.gateway, response.headers["X-Request-Id"])
    assert line["client"] == "127.0.0.1"
    assert line["path"] == "/svc/items/42"


def test_spoofed_forwarded_for_does_not_become_the_client(stack: Stack) -> None:
    response = requests.get(
        f"{stack.nginx.url}/svc/whoami",
        headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6"},
        timeout=10,
    )
    assert response.status_code == 200
    seen = received_for(stack.upstream, response)
    assert seen.header("X-Real-IP") == "127.0.0.1"
    # The chain is passed on for the record, but its right-most hop is the real peer.
    assert seen.header("X-Forwarded-For") == "6.6.6.6, 127.0.0.1"
    assert seen.header("Forwarded") is None
    line = access_line(stack.gateway, response.headers["X-Request-Id"])
    assert line["client"] == "127.0.0.1"


def test_identity_headers_sent_by_the_client_never_reach_the_upstream(stack: Stack) -> None:
    response = requests.get(
        f"{stack.nginx.url}/svc/me",
        headers={
            "X-User-Id": "usr_admin",
            "X-User-Role": "admin",
            "X_User_Id": "usr_admin",
            "X.User.Id": "usr_admin",
            "X-Request-Id": "chosen-by-the-client",
        },
        timeout=10,
    )
    assert response.status_code == 200
    seen = received_for(stack.upstream, response)
    names = seen.header_names()
    assert not {"x-user-id", "x-user-role", "x_user_id", "x.user.id"} & names
    assert "usr_admin" not in str(seen.headers)
    # nginx's own $request_id: one id in nginx's log, gw's log and the upstream's.
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
    assert seen.header("X-Request-Id") == response.headers["X-Request-Id"]


def test_seed_003_login_limit_holds_per_real_client_behind_nginx(stack: Stack) -> None:
    statuses = []
    for i in range(12):
        spoof = {"X-Forwarded-For": f"203.0.113.{i}"}  # a client trying to pick fresh buckets
        response = requests.post(f"{stack.nginx.url}/svc/auth/login", headers=spoof, timeout=10)
        statuses.append(response.status_code)
    assert statuses == [200] * 10 + [429, 429]
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"] == "rate_limit_exceeded"


def test_dot_segments_pass_nginx_raw_and_gw_canonicalizes_them(stack: Stack) -> None:
    response = requests.get(f"{stack.nginx.url}/other/%2e%2e/svc/items", timeout=10)
    assert response.status_code == 200
    assert received_for(stack.upstream, response).target == "/items"
    line = access_line(stack.gateway, response.headers["X-Request-Id"])
    assert line["path"] == "/svc/items"


def test_encoded_slash_reaches_gw_raw_and_is_refused_by_gw(stack: Stack) -> None:
    # Had nginx decoded the path, /svc/a/b would have been routed and answered 200.
    before = stack.upstream.count()
    response = requests.get(f"{stack.nginx.url}/svc/a%2Fb", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_path"
    assert stack.upstream.count() == before


def test_body_limits_of_nginx_and_gw_agree(stack: Stack) -> None:
    limit = int(shipped_server_block()["max_body_bytes"])
    at_limit = requests.post(f"{stack.nginx.url}/svc/upload", data=b"x" * limit, timeout=30)
    assert at_limit.status_code == 200
    assert received_for(stack.upstream, at_limit).body_len == limit
    before = stack.upstream.count()
    over = requests.post(f"{stack.nginx.url}/svc/upload", data=b"x" * (limit + 1), timeout=30)
    assert over.status_code == 413
    assert stack.upstream.count() == before


# -- 2. gw-reload -----------------------------------------------------------------------------


GW = str(Path(sys.executable).with_name("gw"))


def script_env(**extra: str) -> dict[str, str]:
    """The test's environment without any GW_* or RELOAD_* variable, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GW_", "RELOAD_"))}
    return {**base, "GW_BIN": GW, **extra}


def run_reload(pid: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run deploy/gw-reload the way ExecReload does: systemd sets MAINPID."""
    run_env = script_env(MAINPID=str(pid), GW_RELOAD_TIMEOUT="20", **env)
    return subprocess.run(
        [str(DEPLOY / "gw-reload"), *args], env=run_env, capture_output=True, text=True, timeout=40
    )


def reload_config(upstream: Upstream, *extra_routes: dict[str, Any]) -> dict[str, Any]:
    """A config whose upstream address comes from ${RELOAD_UPSTREAM_PORT}."""
    routes = [{"name": "old", "path": "/old/**", "upstream": "svc"}, *extra_routes]
    config = config_for(upstream, *routes)
    config["upstreams"]["svc"]["targets"] = ["http://127.0.0.1:${RELOAD_UPSTREAM_PORT}"]
    return config


@dataclass
class Staged:
    """gunicorn in the unit's layout: it reads ``active``, the admin edits ``source``."""

    gateway: GatewayProcess
    source: Path
    active: Path


@pytest.fixture
def staged(upstream: Upstream, tmp_path: Path) -> Iterator[Staged]:
    source, active = tmp_path / "etc" / "gw.yaml", tmp_path / "run" / "gw.yaml"
    source.parent.mkdir()
    active.parent.mkdir()
    source.write_text(yaml.safe_dump(reload_config(upstream)))
    # RELOAD_UPSTREAM_PORT is in gunicorn's environment and never in gw-reload's: a reload
    # check passes only if it runs with the master's environment, as the new workers will.
    env = {
        "GW_CONFIG_SOURCE": str(source),
        "GW_CONFIG": str(active),
        "RELOAD_UPSTREAM_PORT": str(upstream.port),
    }
    stage = subprocess.run(
        [str(DEPLOY / "gw-reload"), "--stage"], env=script_env(**env), capture_output=True
    )  # ExecStartPre
    assert stage.returncode == 0, stage.stderr
    gateway = start_gateway(reload_config(upstream), extra_env=env)
    yield Staged(gateway, source, active)
    gateway.stop()


def test_reload_applies_a_valid_changed_config(staged: Staged, upstream: Upstream) -> None:
    gateway = staged.gateway
    assert requests.get(f"{gateway.url}/new/x", timeout=5).status_code == 404
    old_workers = set(gateway.worker_pids())
    new_route = {"name": "new", "path": "/new/**", "upstream": "svc"}
    staged.source.write_text(yaml.safe_dump(reload_config(upstream, new_route)))
    result = run_reload(gateway.proc.pid)
    assert result.returncode == 0, result.stderr
    assert f"published {staged.source} as {staged.active}" in result.stdout
    assert staged.active.read_text() == staged.source.read_text()
    # gw-reload returns once every old worker has left: the new route answers at once.
    assert requests.get(f"{gateway.url}/new/x", timeout=5).status_code == 200
    assert requests.get(f"{gateway.url}/old/x", timeout=5).status_code == 200
    assert not old_workers & set(gateway.worker_pids())


def test_reload_returns_while_an_old_worker_still_drains_a_long_request(
    staged: Staged, upstream: Upstream
) -> None:
    gateway = staged.gateway
    held = threading.Thread(
        target=lambda: requests.get(f"{gateway.url}/old/__hang", timeout=30), daemon=True
    )
    held.start()
    assert wait_for(lambda: upstream.count() == 1, timeout=10)
    started = time.monotonic()
    result = run_reload(gateway.proc.pid)
    assert result.returncode == 0, result.stderr
    assert "still finish long requests" in result.stdout
    assert time.monotonic() - started < 20  # not the drain limit (300 s), nor the timeout
    upstream.stop_event.set()
    held.join(timeout=15)


def test_reload_refuses_an_invalid_config_and_the_old_one_keeps_serving(
    staged: Staged, upstream: Upstream
) -> None:
    gateway = staged.gateway
    published = staged.active.read_text()
    broken = {"name": "bad", "path": "/bad/**", "upstream": "svc", "strip_prefix": "bad"}
    staged.source.write_text(yaml.safe_dump(reload_config(upstream, broken)))
    result = run_reload(gateway.proc.pid)
    assert result.returncode == 1
    assert f"{staged.source}: routes[1].strip_prefix" in result.stderr
    assert "refused" in result.stderr and "not signalled" in result.stderr
    assert staged.active.read_text() == published
    assert "Hang up" not in gateway.log_text()
    assert requests.get(f"{gateway.url}/old/x", timeout=5).status_code == 200


def test_a_respawned_worker_never_reads_a_refused_config(
    staged: Staged, upstream: Upstream
) -> None:
    gateway = staged.gateway
    broken = {"name": "bad", "path": "/bad/**", "upstream": "svc", "strip_prefix": "bad"}
    staged.source.write_text(yaml.safe_dump(reload_config(upstream, broken)))
    assert run_reload(gateway.proc.pid).returncode == 1
    victims = set(gateway.worker_pids())
    for pid in victims:
        os.kill(pid, signal.SIGKILL)  # as gunicorn does to workers that time out
    assert wait_for(lambda: len(set(gateway.worker_pids()) - victims) == 2, timeout=10)
    # Only respawned workers are left, so this answer proves they loaded a good config.
    response = requests.get(f"{gateway.url}/old/x", timeout=10)
    assert response.status_code == 200
    assert access_line(gateway, response.headers["X-Request-Id"])["worker"] not in victims
    assert gateway.proc.poll() is None, gateway.log_text()


def test_stage_publishes_only_a_valid_config(upstream: Upstream, tmp_path: Path) -> None:
    source, active = tmp_path / "gw.yaml", tmp_path / "active.yaml"
    env = script_env(GW_CONFIG_SOURCE=str(source), GW_CONFIG=str(active))
    source.write_text(yaml.safe_dump(config_for(upstream)))
    command = [str(DEPLOY / "gw-reload"), "--stage"]
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    good = active.read_text()
    source.write_text("routes: [{path: /x, upstream: nowhere}]\n")
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert f"{source}: " in refused.stderr
    assert active.read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["active.yaml", "gw.yaml"]  # no temp


def test_reload_refuses_a_pid_that_is_not_gunicorn() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        result = run_reload(sleeper.pid, str(sleeper.pid), GW_BIN="/bin/false")
        assert result.returncode == 1
        assert "is not gunicorn" in result.stderr
        assert sleeper.poll() is None  # not signalled
    finally:
        sleeper.kill()
        sleeper.wait()


# -- gw.service: Type=notify, gw.socket: socket activation --------------------------------------


def test_gunicorn_master_itself_notifies_ready(upstream: Upstream, tmp_path: Path) -> None:
    """Type=notify with NotifyAccess=main is right: READY=1 comes from the main process."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        notify.settimeout(20)
        gateway = start_gateway(config_for(upstream), extra_env={"NOTIFY_SOCKET": str(path)})
        try:
            message, ancillary, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(12))
        finally:
            gateway.stop()
    assert b"READY=1" in message.split(b"\n")
    creds = [data for level, kind, data in ancillary if kind == socket.SCM_CREDENTIALS]
    sender_pid = struct.unpack("iii", creds[0][:12])[0]
    assert sender_pid == gateway.proc.pid


def start_socket_activated(
    activate: str, sock: Path, config: dict[str, Any], unused_port: int, tmp: Path
) -> GatewayProcess:
    """Run gunicorn the way gw.socket does: a listening socket passed as LISTEN_FDS."""
    config_path = tmp / "gw.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        "GW_CONFIG": str(config_path),
        "GW_BIND": f"127.0.0.1:{unused_port}",  # must be ignored in favour of the passed socket
        "GW_WORKERS": "2",
        "GW_THREADS": "4",
        "GW_GRACEFUL_TIMEOUT": "5",
        "PYTHONUNBUFFERED": "1",
    }
    command = [activate, "-l", str(sock), *(f"-E{k}={v}" for k, v in env.items())]
    command += [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    log_path = tmp / "gw.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command, "gw.app:app"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    assert wait_for(sock.exists, timeout=10), "systemd-socket-activate did not listen"
    return GatewayProcess(proc, unused_port, log_path, config_path, env)


def test_socket_activation_serves_reloads_and_keeps_the_socket(
    nginx_bin: str, upstream: Upstream, tmp_path: Path
) -> None:
    activate = require_tool("systemd-socket-activate", "systemd", fail_on_ci=False)
    sock, unused_port = tmp_path / "gw.sock", free_port()
    gateway = start_socket_activated(activate, sock, config_for(upstream), unused_port, tmp_path)
    nginx = start_nginx(nginx_bin, tmp_path / "nginx", sock)
    try:
        # The first connection waits in the socket's backlog while gunicorn boots.
        assert requests.get(f"{nginx.url}/svc/first", timeout=30).status_code == 200
        assert f"Listening at: unix:{sock}" in gateway.log_text()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", unused_port), timeout=1).close()
        route = {"name": "new", "path": "/new/**", "upstream": "svc"}
        gateway.config_path.write_text(yaml.safe_dump(config_for(upstream, route)))
        result = run_reload(gateway.proc.pid)  # in place: no GW_CONFIG_SOURCE
        assert result.returncode == 0, result.stderr
        assert requests.get(f"{nginx.url}/new/x", timeout=10).status_code == 200
    finally:
        nginx.stop()
        gateway.stop()
    # systemd owns the socket: gunicorn must not unlink it when it stops.
    assert sock.is_socket()


# -- 3. systemd-analyze -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake root with the units installed and the paths they name present."""
    require_tool("systemd-analyze", "systemd", fail_on_ci=False)
    root = tmp_path_factory.mktemp("unit-root")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in ("gw.service", "gw.socket"):
        shutil.copy(DEPLOY / name, units / name)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for exe in ("opt/gw/venv/bin/gw", "opt/gw/venv/bin/gunicorn"):
        (root / exe).parent.mkdir(parents=True, exist_ok=True)
        (root / exe).write_text("#!/bin/sh\n")
        (root / exe).chmod(0o755)
    (root / "opt/gw/bin").mkdir(parents=True)
    shutil.copy(DEPLOY / "gw-reload", root / "opt/gw/bin/gw-reload")
    return root


def test_units_pass_systemd_analyze_verify(unit_root: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={unit_root}", "gw.service", "gw.socket"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # verify exits 0 on unknown keys and unparsable values: they are only printed.
    assert not [line for line in output.splitlines() if "gw." in line], output


def test_unit_hardening_stays_at_systemds_ok_level(unit_root: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={unit_root}",
         "--threshold=25", "--no-pager", "gw.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


# -- the numbers the shipped files share ------------------------------------------------------


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not found"
    return float(match.group(1))


def test_shipped_timeouts_nest_and_body_limits_agree() -> None:
    nginx = (DEPLOY / "nginx" / "gw.conf").read_text()
    unit = (DEPLOY / "gw.service").read_text()
    env = (DEPLOY / "gw.env.example").read_text()
    gunicorn = (ROOT / "gunicorn.conf.py").read_text()
    example = yaml.safe_load((DEPLOY / "gw.example.yaml").read_text())
    deadline = float(example["server"]["deadline"])
    upstream_timeouts = [
        float(u.get(key, 0)) for u in example["upstreams"].values() for key in u if "timeout" in key
    ]
    gunicorn_timeout = _number(r'"GW_TIMEOUT", "(\d+)"', gunicorn)
    assert _number(r"^GW_TIMEOUT=(\d+)", env) == gunicorn_timeout
    read_timeout = _number(r"^\s*proxy_read_timeout (\d+)s;", nginx)
    assert max(upstream_timeouts) <= deadline < gunicorn_timeout < read_timeout
    assert ServerSettings().deadline == deadline
    graceful = _number(r'"GW_GRACEFUL_TIMEOUT", "(\d+)"', gunicorn)
    assert graceful < _number(r"^TimeoutStopSec=(\d+)", unit)
    assert _number(r"^GW_DRAIN_TIMEOUT=(\d+)", env) == DEFAULT_DRAIN_TIMEOUT
    keepalive = _number(r'"GW_KEEPALIVE", "(\d+)"', gunicorn)
    assert _number(r"^\s*keepalive_timeout (\d+)s;", nginx) < keepalive
    body = _number(r"^\s*client_max_body_size (\d+)m;", nginx) * MIB
    assert body == example["server"]["max_body_bytes"] == ServerSettings().max_body_bytes
