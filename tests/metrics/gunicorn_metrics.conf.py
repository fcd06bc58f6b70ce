"""gunicorn settings for the metrics multi-worker test: the two master hooks gw.observe.metrics
needs."""

import os

bind = os.environ["METRICS_TEST_BIND"]
workers = 3
worker_class = "gthread"
threads = 2
keepalive = 10
timeout = 30
graceful_timeout = 3
errorlog = "-"


def on_starting(server):
    from gw.observe import metrics

    metrics.prepare_master()


def child_exit(server, worker):
    from gw.observe import metrics

    metrics.worker_exited(worker.pid)
