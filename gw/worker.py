"""The worker classes under the name they had before the re-housing (now ``gw.edge.worker``).

Env files, systemd units and ``gunicorn -k gw.worker.BalancedGeventWorker`` written for
earlier releases still name this module; ``gunicorn.conf.py`` also maps ``GW_WORKER_CLASS``
values that start with ``gw.worker.`` to ``gw.edge.worker``.
"""

from gw.edge.worker import BalancedGeventWorker, BalancedThreadWorker

__all__ = ["BalancedGeventWorker", "BalancedThreadWorker"]
