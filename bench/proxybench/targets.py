"""The systems under test: the upstream itself and the proxies put in front of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from proxybench.procs import Child, ChildFailed, descendants, free_port, start, wait_ready

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
CONFIG_DIR = BENCH_DIR / "configs"
EXPRESS_DIR = BENCH_DIR / "express"

BODY = '{"ok":true,"upstream":"up"}'
PATH = "/api/bench"
NGINX_WORKERS = "auto"


@dataclass(frozen=True)
class GwOptions:
    """gunicorn worker model for a gw target; None leaves gunicorn.conf.py's default."""

    worker_class: str | None = None
    workers: int | None = None
    threads: int | None = None
    access_log: bool = True

    def env(self) -> dict[str, str]:
        """Return the GW_* environment that selects this worker model."""
        env: dict[str, str] = {}
        if self.worker_class:
            env["GW_WORKER_CLASS"] = self.worker_class
        if self.workers:
            env["GW_WORKERS"] = str(self.workers)
        threads = self.threads
        if self.worker_class == "sync" and threads is None:
            # gunicorn silently turns sync into gthread when threads > 1.
            threads = 1
        if threads:
            env["GW_THREADS"] = str(threads)
        return env


@dataclass(frozen=True)
class TargetSpec:
    """What to start for one row of the table."""

    name: str
    kind: str  # direct | nginx | express | gw
    processes: int = 1
    gw: GwOptions = field(default_factory=GwOptions)
    tree: Path = REPO_DIR  # gw: the source tree (with gw/ and gunicorn.conf.py) to run


PEERS = {
    "direct": TargetSpec("direct", "direct"),
    "nginx": TargetSpec("nginx", "nginx"),
    "express-1": TargetSpec("express-1", "express", processes=1),
    "express-cluster-2": TargetSpec("express-cluster-2", "express", processes=2),
}


@dataclass
class Target:
    """A started target: where to send load and whose process tree to charge CPU to."""

    spec: TargetSpec
    port: int
    child: Child
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Return the row name."""
        return self.spec.name

    @property
    def url(self) -> str:
        """Return the URL that the load generator requests."""
        return f"http://127.0.0.1:{self.port}{PATH}"


def render(template: str, dest: Path, **values: object) -> Path:
    """Fill ``configs/template`` with ``values`` and write it to ``dest``."""
    text = Template((CONFIG_DIR / template).read_text()).substitute(values)
    dest.write_text(text)
    return dest


def launch_upstream(workdir: Path) -> Target:
    """Start the nginx upstream that answers the fixed 27-byte body (without waiting)."""
    port, prefix = free_port(), _prefix(workdir, "upstream")
    conf = render(
        "upstream.nginx.conf",
        prefix / "nginx.conf",
        workers=NGINX_WORKERS,
        prefix=prefix,
        port=port,
        body=BODY,
    )
    child = start("upstream", _nginx_argv(prefix, conf), log_dir=workdir)
    return Target(PEERS["direct"], port, child)


def launch(spec: TargetSpec, workdir: Path, upstream: Target) -> Target:
    """Start one proxy in front of ``upstream``, without waiting; "direct" is the upstream."""
    if spec.kind == "direct":
        return Target(spec, upstream.port, upstream.child)
    starters = {"nginx": _start_nginx, "express": _start_express, "gw": _start_gw}
    return starters[spec.kind](spec, workdir, upstream.port)


def ready(target: Target, timeout: float) -> Target:
    """Wait until ``target`` serves the upstream's exact body, then note its process count.

    Raises:
        ChildFailed: it died, never answered 200, or answered another body.
    """
    body = wait_ready(target.child, target.port, PATH, timeout)
    if body != BODY.encode():
        raise ChildFailed(f"{target.name} answered {body[:200]!r}, expected {BODY!r}")
    target.info["processes"] = _tree_size(target)
    return target


def settle(started: list[Target], limit: float = 15.0) -> None:
    """Wait until no target's process count changes for a second, then record the counts.

    gunicorn and node's cluster fork their workers one by one after the first one answers.
    """
    deadline = time.monotonic() + limit
    sizes = [_tree_size(t) for t in started]
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = [_tree_size(t) for t in started]
        if now == sizes:
            break
        sizes = now
    for target, size in zip(started, sizes, strict=True):
        target.info["processes"] = size


def _tree_size(target: Target) -> int:
    """Return how many processes the target runs (its leader and every descendant)."""
    return 1 + len(descendants(target.child.pid))


def _prefix(workdir: Path, name: str) -> Path:
    """Create and return a private directory for one target."""
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    return prefix


def _nginx_argv(prefix: Path, conf: Path) -> list[str]:
    """Return the command that runs nginx in the foreground from ``prefix``."""
    return ["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]


def _start_nginx(spec: TargetSpec, workdir: Path, upstream_port: int) -> Target:
    """Start nginx as a reverse proxy with upstream keep-alive."""
    port, prefix = free_port(), _prefix(workdir, spec.name)
    conf = render(
        "proxy.nginx.conf",
        prefix / "nginx.conf",
        workers=NGINX_WORKERS,
        prefix=prefix,
        port=port,
        upstream_port=upstream_port,
    )
    return Target(spec, port, start(spec.name, _nginx_argv(prefix, conf), log_dir=workdir))


def _start_express(spec: TargetSpec, workdir: Path, upstream_port: int) -> Target:
    """Start Express + http-proxy-middleware, one process or a node cluster."""
    port = free_port()
    script = "proxy.js" if spec.processes == 1 else "cluster.js"
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PORT": str(port),
        "UPSTREAM": f"http://127.0.0.1:{upstream_port}",
        "WORKERS": str(spec.processes),
    }
    child = start(spec.name, ["node", script], log_dir=workdir, env=env, cwd=EXPRESS_DIR)
    return Target(spec, port, child)


def _start_gw(spec: TargetSpec, workdir: Path, upstream_port: int) -> Target:
    """Start gw under gunicorn with a generated one-route config."""
    port = free_port()
    config = render(
        "gw.yaml",
        _prefix(workdir, spec.name) / "gw.yaml",
        upstream_port=upstream_port,
        access_log="true" if spec.gw.access_log else "false",
    )
    env = {
        **os.environ,
        "GW_CONFIG": str(config),
        "GW_BIND": f"127.0.0.1:{port}",
        **spec.gw.env(),
    }
    argv = [gunicorn_path(), "-c", "gunicorn.conf.py", "gw.app:app"]
    child = start(spec.name, argv, log_dir=workdir, env=env, cwd=spec.tree)
    info = {"gw_env": spec.gw.env(), "access_log": spec.gw.access_log, "tree": str(spec.tree)}
    return Target(spec, port, child, info)


def gunicorn_path() -> str:
    """Return the gunicorn of the repository's virtualenv, else the one on PATH."""
    venv = REPO_DIR / ".venv" / "bin" / "gunicorn"
    return str(venv) if venv.exists() else shutil.which("gunicorn") or "gunicorn"


def worker_class_seen(target: Target) -> str | None:
    """Return the worker class that gunicorn says it uses, from the target's log."""
    found = re.findall(r"Using worker: (\S+)", target.child.log_tail(200))
    return found[-1] if found else None


def ensure_express_deps(timeout: float = 300) -> None:
    """Install the pinned Express dependencies if node_modules is missing.

    Raises:
        ChildFailed: npm failed.
    """
    if (EXPRESS_DIR / "node_modules").is_dir():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=EXPRESS_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise ChildFailed(f"npm ci failed in {EXPRESS_DIR}:\n{done.stderr[-2000:]}")
