"""``gw.worker`` is the name the worker classes had before gw.edge: env files, systemd units and
``gunicorn -k gw.worker.BalancedGeventWorker`` still say it, so it must keep importing."""

from __future__ import annotations

import importlib


def test_the_old_worker_module_names_the_same_classes() -> None:
    old = importlib.import_module("gw.worker")
    new = importlib.import_module("gw.edge.worker")
    assert old.BalancedGeventWorker is new.BalancedGeventWorker
    assert old.BalancedThreadWorker is new.BalancedThreadWorker
