"""Metric values are counted in memory and reach the worker's file when published."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os
from prometheus_client import Counter
from prometheus_client.multiprocess import MultiProcessCollector
from gw.observe import published

published.install()
requests = Counter("t_requests", "test", ["route"])

def total():
    return sum(
        s.value for f in MultiProcessCollector(None).collect() for s in f.samples
        if s.name == "t_requests_total"
    )

for _ in range(3):
    requests.labels("a").inc()
print("before publish", total())
published.publish()
print("after publish", total())
pid = os.fork()
if pid == 0:
    requests.labels("a").inc(10)
    published.publish()
    os._exit(0)
os.waitpid(pid, 0)
print("after the child", total(), sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
requests.labels("a").inc()
"""


def test_counts_reach_the_file_when_published_and_at_exit(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "before publish 0.0"  # counted in memory only
    assert lines[1] == "after publish 3.0"
    # The forked child counted into its own file, from zero, and left the parent's alone.
    assert lines[2].startswith("after the child 13.0")
    assert len([n for n in os.listdir(tmp_path) if n.startswith("counter_")]) == 2
    from prometheus_client.multiprocess import MultiProcessCollector

    samples = [
        s.value
        for family in MultiProcessCollector(None, path=str(tmp_path)).collect()
        for s in family.samples
        if s.name == "t_requests_total"
    ]
    assert sum(samples) == 14  # the last inc was published at exit
