"""How long an aggregate route takes compared with its parts: seed 003's /api/home.

Three real upstreams on 127.0.0.1 that each answer after ``--delay`` seconds, gw (real
gunicorn) in front with an aggregate route over them, and ``--requests`` sequential requests:
prints the median and p90 of the aggregate next to the slowest part and the sum of the parts.

Run: python bench/compose_bench.py [--delay 0.2] [--requests 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.gateway import start_gateway  # noqa: E402
from tests.support.upstream import start_upstream  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2, help="seconds each part takes")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    parts = [start_upstream() for _ in range(3)]
    for part in parts:
        part.delay = args.delay
    names = ["user", "recent_orders", "recommendations"]
    config = {
        "upstreams": {n: {"targets": [p.url]} for n, p in zip(names, parts, strict=True)},
        "routes": [
            {
                "name": "home",
                "path": "/api/home",
                "aggregate": {"parts": [{"key": n, "upstream": n, "path": f"/{n}"} for n in names]},
            }
        ],
    }
    gw = start_gateway(config, workers=2)
    try:
        requests.get(f"{gw.url}/api/home", timeout=10)  # warm the pools
        took = []
        for _ in range(args.requests):
            started = time.monotonic()
            assert requests.get(f"{gw.url}/api/home", timeout=10).status_code == 200
            took.append((time.monotonic() - started) * 1000)
    finally:
        gw.stop()
        for part in parts:
            part.close()
    took.sort()
    result = {
        "parts": 3,
        "part_ms": round(args.delay * 1000, 1),
        "sum_of_parts_ms": round(3 * args.delay * 1000, 1),
        "aggregate_p50_ms": round(statistics.median(took), 1),
        "aggregate_p90_ms": round(took[int(len(took) * 0.9) - 1], 1),
    }
    print(json.dumps(result))
    (ROOT / "bench" / "results" / "compose.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
