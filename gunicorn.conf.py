"""gunicorn settings for gw. Thin on purpose: it never imports gw.app (the master would
cache the config and HUP would stop reloading it). Everything comes from the environment.

GW_BIND          address to listen on (default 127.0.0.1:8080; unix:/run/gw/gw.sock behind nginx)
GW_WORKER_CLASS  gw.edge.worker.BalancedGeventWorker (default), gw.edge.worker.BalancedThreadWorker,
                 sync (gw.worker.* names the same classes, as before gw.edge)
GW_WORKERS       worker processes (default: one per CPU core)
GW_WORKER_CONNECTIONS  connections one gevent worker serves at once (default 1000)
GW_THREADS       threads per worker for threaded workers (default 8; sync always has one)
GW_TIMEOUT       seconds before a silent worker is killed and replaced (default 30)
GW_METRICS_BIND  a TCP address that serves only metrics, health and ready (e.g. 127.0.0.1:9180);
                 the metrics path is then answered there alone
GW_GRACEFUL_TIMEOUT  seconds a full stop (SIGTERM to the master) lets workers finish their
                 requests before they are cut (default 30)
GW_DRAIN_TIMEOUT seconds a worker retired by a reload (HUP) may finish its requests while the
                 new workers serve (default 300; nginx's worker_shutdown_timeout). Requests
                 still running then are cut, and each is logged with its request id.
"""

import os

_cores = os.cpu_count() or 1

bind = os.environ.get("GW_BIND", "127.0.0.1:8080").split(",")
if os.environ.get("GW_METRICS_BIND"):
    bind.append(os.environ["GW_METRICS_BIND"])
worker_class = os.environ.get("GW_WORKER_CLASS", "gw.edge.worker.BalancedGeventWorker")
if worker_class.startswith("gw.worker."):  # the name before gw.edge: env files still say it
    worker_class = "gw.edge." + worker_class.removeprefix("gw.")
# An I/O-bound proxy: one process per core, each waiting on many upstreams at once (greenlets
# for the default worker, threads for BalancedThreadWorker).
if worker_class == "gw.edge.worker.BalancedGeventWorker":
    # Patch before the master's hooks import anything (urllib3 imports ssl): gevent warns that
    # patching ssl after its import, as the worker would otherwise do, can misbehave.
    from gevent import monkey

    monkey.patch_all()
workers = int(os.environ.get("GW_WORKERS", str(_cores)))
worker_connections = int(os.environ.get("GW_WORKER_CONNECTIONS", "1000"))
# gunicorn silently runs gthread for "sync" with threads > 1; sync means one thread here.
_sync = worker_class == "sync" or worker_class.endswith("SyncWorker")
threads = 1 if _sync else int(os.environ.get("GW_THREADS", "8"))
# Nesting: every upstream timeout <= server.deadline (25 s) < timeout < nginx proxy_read_timeout.
timeout = int(os.environ.get("GW_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GW_GRACEFUL_TIMEOUT", "30"))
# Longer than the drop-in's upstream keepalive_timeout (4 s), so nginx closes idle first.
keepalive = int(os.environ.get("GW_KEEPALIVE", "5"))
# APPSEC: gunicorn makes each worker's heartbeat file here with mkstemp (a unique name, owner
# only, unlinked at once), so a shared directory gives no one else a way in; in memory, a
# heartbeat never waits for a disk (gunicorn's own advice).
_SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None
accesslog = None  # gw writes its own JSON access line per request
errorlog = "-"
loglevel = os.environ.get("GW_LOG_LEVEL", "info")
proc_name = "gw"
# Request limits enforced by gunicorn's parser (answered with gw's JSON errors: 414, 431).
limit_request_line = int(os.environ.get("GW_LIMIT_REQUEST_LINE", "8190"))
limit_request_fields = int(os.environ.get("GW_LIMIT_REQUEST_FIELDS", "100"))
limit_request_field_size = int(os.environ.get("GW_LIMIT_REQUEST_FIELD_SIZE", "8190"))
# gunicorn's own X-Forwarded-* handling is not used: gw resolves clients itself.
forwarded_allow_ips = ""
# gunicorn's runtime control socket is not used by gw (systemd does process control), and a
# shared default path would collide between instances on one host.
control_socket_disable = True


def on_starting(server):
    """Before forking: make the shared rate-limit table and publish the checked config."""
    from gw import master  # the master's steps only; never gw.app (see the module docstring)
    from gw.edge.arbiter import GwArbiter, drain_timeout_from_env
    from gw.errors import ConfigError
    from gw.host import runtime

    try:
        drain_timeout = drain_timeout_from_env()
    except ConfigError as ex:
        server.log.error("%s", ex.problems[0])
        raise SystemExit(1) from None
    # Reloads that keep the new workers at strength while the old ones drain (gw/edge/arbiter.py).
    # gunicorn has no setting for the arbiter class; this hook is the first to see the
    # arbiter, before any worker is forked.
    GwArbiter.adopt(server, drain_timeout)
    try:
        # A derived directory goes when this master exits, however it exits: gunicorn's
        # on_exit would miss a refused start and an error in its main loop.
        runtime.cleanup_at_exit(master.prepare())
        from gw.observe import metrics

        metrics.prepare_master()  # before any worker imports prometheus_client
        master.stage_config()
    except ConfigError as ex:
        for problem in ex.problems:
            server.log.error("config error: %s: %s", os.environ.get("GW_CONFIG"), problem)
        raise SystemExit(1) from None
    except runtime.RuntimeDirUnusable as ex:
        server.log.error("cannot start: %s", ex)
        raise SystemExit(1) from None
    except OSError as ex:  # the metrics directory, inside the runtime directory
        server.log.error("cannot start: runtime directory unusable: %s", ex)
        raise SystemExit(1) from None


def on_reload(server):
    """On HUP: publish the new config only if it is valid; otherwise keep serving the old one."""
    from gw import master
    from gw.errors import ConfigError
    from gw.host import runtime

    try:
        master.reload_config()  # and one gw.audit line, accepted or refused
        server.log.info("reloaded config %s", os.environ.get("GW_CONFIG"))
    except ConfigError as ex:
        for problem in ex.problems:
            server.log.error("config error: %s: %s", os.environ.get("GW_CONFIG"), problem)
        server.log.error("the new config is invalid; workers keep serving the previous one")
    except runtime.RuntimeDirUnusable as ex:
        server.log.error("reload refused, workers keep serving the previous config: %s", ex)


def post_worker_init(worker):
    """In a worker whose app is loaded: keep the garbage collector off what loading made
    (``gw.host.process.freeze_loaded_heap``)."""
    from gw.host import process

    process.freeze_loaded_heap()


def worker_int(worker):
    """In a worker told to stop now (SIGQUIT: the drain limit, a forced stop; or SIGINT):
    log every request it is cutting, with its request id."""
    from gw.edge import inflight

    inflight.report_cut(worker.log, worker.pid)


def child_exit(server, worker):
    """A worker is gone (exited, or SIGKILLed): drop its live gauges from the metrics."""
    from gw.observe import metrics

    metrics.worker_exited(worker.pid)
