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

from proxybench.procs import Child, ChildFailed, descendants, fetch, free_port, start, wait_ready
from proxybench.tokens import AUDIENCE, ISSUER, Credentials

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
CONFIG_DIR = BENCH_DIR / "configs"
EXPRESS_DIR = BENCH_DIR / "express"
FASTIFY_DIR = BENCH_DIR / "fastify"
NODE_DIRS = {"express": EXPRESS_DIR, "fastify": FASTIFY_DIR}

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
    metrics: bool = True

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
    kind: str  # direct | nginx | express | fastify | floor | gw
    processes: int = 1
    options: tuple[str, ...] = ()  # floor: more arguments of bench/floor/proxy.py
    gw: GwOptions = field(default_factory=GwOptions)
    tree: Path = REPO_DIR  # gw: the source tree (with gw/ and gunicorn.conf.py) to run
    auth: str | None = None  # gw: the full pipeline with JWTs of this algorithm (RS256, HS256)
    venv: Path | None = None  # gw, floor: the virtualenv that runs it (None: the repo's .venv)


PEERS = {
    "direct": TargetSpec("direct", "direct"),
    "nginx": TargetSpec("nginx", "nginx"),
    "express-1": TargetSpec("express-1", "express", processes=1),
    "express-cluster-2": TargetSpec("express-cluster-2", "express", processes=2),
    "fastify": TargetSpec("fastify", "fastify", processes=2),
    "floor": TargetSpec("floor", "floor", processes=2),
    "floor-falcon": TargetSpec("floor-falcon", "floor", processes=2, options=("--falcon",)),
}
FULL_ROWS = {"gw-full-rs256": "RS256", "gw-full-hs256": "HS256"}


@dataclass(frozen=True)
class AuthSetup:
    """The keys of a gw-full row: tokens for wrk, and the secret or the JWKS URL for gw."""

    credentials: Credentials
    jwks_uri: str | None = None

    def key_setting(self) -> str:
        """Return the YAML line that gives gw its key: ``secret:`` or ``jwks_uri:``."""
        if self.credentials.secret is not None:
            return f'secret: "{self.credentials.secret}"'
        if self.jwks_uri is None:
            raise ValueError(f"{self.credentials.alg} needs a JWKS URL")
        return f'jwks_uri: "{self.jwks_uri}"'


@dataclass
class Target:
    """A started target: where to send load and whose process tree to charge CPU to."""

    spec: TargetSpec
    port: int
    child: Child
    info: dict[str, Any] = field(default_factory=dict)
    tokens: tuple[str, ...] = ()  # bearer tokens wrk sends in turn (gw-full rows)

    @property
    def name(self) -> str:
        """Return the row name."""
        return self.spec.name

    @property
    def url(self) -> str:
        """Return the URL that the load generator requests."""
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def workers(self) -> int:
        """Return how many processes serve requests: all but the master, or the only one."""
        processes = int(self.info.get("processes", 1))
        return processes - 1 if processes > 1 else 1

    def auth_headers(self) -> dict[str, str]:
        """Return the headers of a request this target admits (a bearer token if it needs one)."""
        return {"Authorization": f"Bearer {self.tokens[0]}"} if self.tokens else {}


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


def launch(
    spec: TargetSpec, workdir: Path, upstream: Target, auth: AuthSetup | None = None
) -> Target:
    """Start one proxy in front of ``upstream``, without waiting; "direct" is the upstream.

    ``auth`` is required for a gw-full row (``spec.auth``) and ignored otherwise.
    """
    if spec.kind == "direct":
        return Target(spec, upstream.port, upstream.child)
    if spec.kind == "gw":
        return _start_gw(spec, workdir, upstream.port, auth if spec.auth else None)
    starters = {
        "nginx": _start_nginx,
        "express": _start_node,
        "fastify": _start_node,
        "floor": _start_floor,
    }
    return starters[spec.kind](spec, workdir, upstream.port)


def ready(target: Target, timeout: float) -> Target:
    """Wait until ``target`` serves the upstream's exact body, then note its process count.

    Raises:
        ChildFailed: it died, never answered 200, or answered another body.
    """
    body = wait_ready(target.child, target.port, PATH, timeout, target.auth_headers())
    if body != BODY.encode():
        raise ChildFailed(f"{target.name} answered {body[:200]!r}, expected {BODY!r}")
    if target.tokens:
        _check_refuses_strangers(target)
    target.info["processes"] = _tree_size(target)
    return target


def _check_refuses_strangers(target: Target) -> None:
    """Raise ChildFailed unless a request without a token gets 401: auth is really on."""
    status, _ = fetch(target.port, PATH)
    if status != 401:
        raise ChildFailed(f"{target.name} answered {status} without a token, expected 401")


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


def _start_node(spec: TargetSpec, workdir: Path, upstream_port: int) -> Target:
    """Start a node peer (Express or Fastify), one process or a node cluster."""
    port = free_port()
    script = "proxy.js" if spec.processes == 1 else "cluster.js"
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PORT": str(port),
        "UPSTREAM": f"http://127.0.0.1:{upstream_port}",
        "WORKERS": str(spec.processes),
    }
    child = start(spec.name, ["node", script], log_dir=workdir, env=env, cwd=NODE_DIRS[spec.kind])
    return Target(spec, port, child)


def _start_floor(spec: TargetSpec, workdir: Path, upstream_port: int) -> Target:
    """Start the minimal gevent + llhttp proxy (``bench/floor/proxy.py``) with gw's Python."""
    port = free_port()
    python = python_path(spec.venv)
    argv = [python, str(BENCH_DIR / "floor" / "proxy.py"), "--port", str(port)]
    argv += ["--upstream", f"127.0.0.1:{upstream_port}", "--workers", str(spec.processes)]
    child = start(spec.name, [*argv, *spec.options], log_dir=workdir)
    return Target(spec, port, child, {"python": python_of(spec.venv)})


def _start_gw(
    spec: TargetSpec, workdir: Path, upstream_port: int, auth: AuthSetup | None
) -> Target:
    """Start gw under gunicorn with a generated one-route config (``auth``: the full pipeline)."""
    port = free_port()
    config = _gw_config(spec, _prefix(workdir, spec.name) / "gw.yaml", upstream_port, auth)
    env = {
        **os.environ,
        "GW_CONFIG": str(config),
        "GW_BIND": f"127.0.0.1:{port}",
        **spec.gw.env(),
    }
    argv = [gunicorn_path(spec.venv), "-c", "gunicorn.conf.py", "gw.app:app"]
    child = start(spec.name, argv, log_dir=workdir, env=env, cwd=spec.tree)
    info = {
        "gw_env": spec.gw.env(),
        "access_log": spec.gw.access_log,
        "metrics": spec.gw.metrics,
        "tree": str(spec.tree),
        "python": python_of(spec.venv),
    }
    if auth is None:
        return Target(spec, port, child, info)
    info |= {"auth": auth.credentials.alg, "users": len(auth.credentials.tokens)}
    return Target(spec, port, child, info, tokens=auth.credentials.tokens)


def _gw_config(spec: TargetSpec, dest: Path, upstream_port: int, auth: AuthSetup | None) -> Path:
    """Write gw's config: the plain proxy path, or the full pipeline when ``auth`` is given."""
    access_log = "true" if spec.gw.access_log else "false"
    metrics = "true" if spec.gw.metrics else "false"
    if auth is None:
        return render(
            "gw.yaml", dest, upstream_port=upstream_port, access_log=access_log, metrics=metrics
        )
    return render(
        "gw-full.yaml",
        dest,
        upstream_port=upstream_port,
        access_log=access_log,
        metrics=metrics,
        issuer=ISSUER,
        audience=AUDIENCE,
        alg=auth.credentials.alg,
        key_setting=auth.key_setting(),
    )


def gunicorn_path(venv: Path | None = None) -> str:
    """Return the gunicorn of ``venv``, else of the repository's virtualenv, else on PATH."""
    if venv is not None:
        return str(venv / "bin" / "gunicorn")
    default = REPO_DIR / ".venv" / "bin" / "gunicorn"
    return str(default) if default.exists() else shutil.which("gunicorn") or "gunicorn"


def python_path(venv: Path | None = None) -> str:
    """Return the Python beside ``gunicorn_path(venv)``: the one that runs gw."""
    return str(Path(gunicorn_path(venv)).with_name("python"))


def python_of(venv: Path | None = None) -> str:
    """Return the version and build of ``python_path(venv)``: the same version may be a
    distribution's optimised build or a plain one (pyenv's)."""
    probe = "import sys; print(sys.version.split()[0], sys.base_prefix)"
    argv = [python_path(venv), "-c", probe]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.stdout.strip() or done.stderr.strip()


def worker_class_seen(target: Target) -> str | None:
    """Return the worker class that gunicorn says it uses, from the target's log."""
    found = re.findall(r"Using worker: (\S+)", target.child.log_tail(200))
    return found[-1] if found else None


def ensure_node_deps(kind: str, timeout: float = 300) -> None:
    """Install the pinned dependencies of a node peer (express, fastify) if they are missing.

    Raises:
        ChildFailed: npm failed.
    """
    folder = NODE_DIRS[kind]
    if (folder / "node_modules").is_dir():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise ChildFailed(f"npm ci failed in {folder}:\n{done.stderr[-2000:]}")
