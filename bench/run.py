#!/usr/bin/env python3
"""Benchmark gw against the direct upstream, nginx, Express and Fastify in one interleaved run.

Usage: python bench/run.py [--quick] [--targets direct,nginx,gw] [--gw-worker-class sync] ...
Prints a table of medians and ratios and writes bench/results/proxy-latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from proxybench import machine, report, table, targets, tokens
from proxybench.keyserver import KeyServer
from proxybench.load import LoadFailed
from proxybench.procs import ChildFailed
from proxybench.schedule import Plan, Sample, run_rounds, warm_up
from proxybench.targets import BENCH_DIR, FULL_ROWS, AuthSetup, GwOptions, Target, TargetSpec

ALL_TARGETS = (
    "direct",
    "nginx",
    "express-1",
    "express-cluster-2",
    "fastify",
    "floor",
    "floor-falcon",
    "gw",
    *FULL_ROWS,
)
NODE_KINDS = ("express", "fastify")
DEFAULT_OUTPUT = BENCH_DIR / "results" / "proxy-latest.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--targets", default=",".join(ALL_TARGETS), help="comma list (default: all)")
    add("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    add("--rounds", type=int, default=3, help="interleaved rounds; medians taken (default 3)")
    add("--warmup", type=float, default=2.0, help="warm-up seconds per target (default 2)")
    add("--quick", action="store_true", help="smoke run: 2 s runs, 1 round, 2 s warm-up")
    add(
        "--connections-per-worker",
        type=_counts,
        metavar="N[,N...]",
        help="instead of 16 and 64 connections, load each target with N x its workers "
        "connections, for each N (e.g. 8,32); the report labels the levels N/w",
    )
    add(
        "--quiet-wait",
        type=float,
        default=3.0,
        help="before each run, wait up to this many seconds for other work on the box to stop "
        "(default 3; 0 disables)",
    )
    add("--gw-workers", type=int, help="GW_WORKERS for gunicorn (default: gunicorn.conf.py's)")
    add("--gw-threads", type=int, help="GW_THREADS for gunicorn")
    add(
        "--gw-worker-class",
        help="GW_WORKER_CLASS for gunicorn: sync, gthread, balanced, gevent or a dotted class path",
    )
    add(
        "--gw-variant",
        action="append",
        default=[],
        metavar="CLASS[:WORKERS[xTHREADS]]",
        help="benchmark gw under this worker model, as row gw-SPEC; repeat to compare models "
        "in the same run (e.g. --gw-variant sync:4 --gw-variant balanced:2x4); CLASS is sync, "
        "gthread, balanced (gw.edge.worker.BalancedThreadWorker), gevent (gunicorn's own) or a "
        "dotted class path",
    )
    add(
        "--gw-no-access-log",
        action="store_true",
        help="turn off gw's per-request access log line (server.access_log: false); the peers "
        "log nothing",
    )
    add(
        "--gw-no-metrics",
        action="store_true",
        help="turn off gw's metrics (metrics.enabled: false) in every gw row; with "
        "--gw-no-access-log, what observability costs is the difference from a default run",
    )
    add(
        "--gw-dark",
        action="store_true",
        help="also run every gw row with its access log and metrics off, as <row>-dark, in the "
        "same interleaved run: the difference prices observability",
    )
    add(
        "--gw-dark-together",
        action="store_true",
        help="with --gw-dark: load each twin at the same time as its row (in an extra run of "
        "the row's), not in a run of its own",
    )
    add(
        "--gw-baseline",
        type=Path,
        metavar="DIR",
        help="also run gw from another source tree (e.g. `git archive COMMIT | tar -x -C DIR`) "
        "as row gw-baseline (and each gw-full row as <row>-baseline), with the same options, to "
        "compare two versions in one run",
    )
    add(
        "--gw-venv",
        type=Path,
        metavar="DIR",
        help="the virtualenv whose gunicorn and Python run gw and the floor rows (default: the "
        "repository's .venv); deploy/README.md makes one with the system's python3, whose "
        "build may be faster than a plain one of the same version",
    )
    add(
        "--gw-baseline-venv",
        type=Path,
        metavar="DIR",
        help="with --gw-baseline: the virtualenv of the baseline rows (default: --gw-venv's); "
        "--gw-baseline . with another virtualenv compares two Pythons in one run",
    )
    add("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    add("--keep-logs", action="store_true", help="keep the temp dir with configs and logs")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.quiet_wait < 0:
        parser.error("need --rounds >= 1, --duration >= 1, --warmup >= 0, --quiet-wait >= 0")
    if args.gw_dark_together and not args.gw_dark:
        parser.error("--gw-dark-together needs --gw-dark")
    if args.gw_baseline_venv and not args.gw_baseline:
        parser.error("--gw-baseline-venv needs --gw-baseline (the tree: . for this one)")
    for venv in (args.gw_venv, args.gw_baseline_venv):
        if venv is not None and not (venv / "bin" / "gunicorn").exists():
            parser.error(f"{venv} is not a virtualenv with gunicorn (bin/gunicorn)")
    if args.quick:
        args.duration, args.rounds, args.warmup = 2.0, 1, 2.0
        args.quiet_wait = min(args.quiet_wait, 1.0)
    return args


def _counts(text: str) -> tuple[int, ...]:
    """Parse "8" or "8,32": distinct positive counts, in the order given.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r}: want distinct positive counts, e.g. 8,32")
    return counts


def make_plan(args: argparse.Namespace) -> Plan:
    """Return the measurement plan the options ask for."""
    per_worker = args.connections_per_worker is not None
    return Plan(
        args.rounds,
        args.duration,
        args.warmup,
        throughput=args.connections_per_worker if per_worker else Plan.throughput,
        script=BENCH_DIR / "configs" / "wrk-auth.lua",
        quiet_wait=args.quiet_wait,
        per_worker=per_worker,
    )


VARIANT = re.compile(r"([\w.]+)(?::(\d+)(?:x(\d+))?)?")
WORKER_CLASSES = {
    "sync": "sync",
    "gthread": "gthread",
    "balanced": "gw.edge.worker.BalancedThreadWorker",
    "gevent": "gevent",
}


def parse_variant(text: str) -> GwOptions:
    """Parse CLASS[:WORKERS[xTHREADS]], e.g. "sync:4", "gthread:2x8" or "balanced:2x4".

    CLASS is sync, gthread, balanced (gw.edge.worker.BalancedThreadWorker), gevent (gunicorn's stock
    gevent worker) or a dotted class path such as gw.edge.worker.BalancedGeventWorker (the default).

    Raises:
        ValueError: the text is not of that form.
    """
    found = VARIANT.fullmatch(text)
    worker_class = WORKER_CLASSES.get(found[1], found[1]) if found else ""
    if not found or ("." not in worker_class and worker_class not in WORKER_CLASSES):
        raise ValueError(
            f"{text!r}: want CLASS[:WORKERS[xTHREADS]], CLASS one of {list(WORKER_CLASSES)}"
        )
    return GwOptions(
        worker_class=worker_class,
        workers=int(found[2]) if found[2] else None,
        threads=int(found[3]) if found[3] else None,
    )


def gw_specs(args: argparse.Namespace) -> list[TargetSpec]:
    """Return the gw rows: one per --gw-variant, else one row "gw" from the --gw-* flags."""
    access_log = not args.gw_no_access_log
    if args.gw_variant:
        try:
            variants = [(text, parse_variant(text)) for text in args.gw_variant]
        except ValueError as ex:
            raise SystemExit(f"--gw-variant: {ex}") from ex
        return [
            TargetSpec(
                f"gw-{text}",
                "gw",
                gw=replace(options, access_log=access_log, metrics=not args.gw_no_metrics),
                venv=args.gw_venv,
            )
            for text, options in variants
        ]
    worker_class = WORKER_CLASSES.get(args.gw_worker_class, args.gw_worker_class)
    options = GwOptions(
        worker_class, args.gw_workers, args.gw_threads, access_log, not args.gw_no_metrics
    )
    specs = [TargetSpec("gw", "gw", gw=options, venv=args.gw_venv)]
    if args.gw_baseline:
        tree = args.gw_baseline.resolve()
        venv = baseline_venv(args)
        specs.append(TargetSpec("gw" + report.OLD, "gw", gw=options, tree=tree, venv=venv))
    return specs


def baseline_venv(args: argparse.Namespace) -> Path | None:
    """Return the virtualenv of the --gw-baseline rows."""
    venv: Path | None = args.gw_baseline_venv or args.gw_venv
    return venv


def full_spec(name: str, args: argparse.Namespace) -> TargetSpec:
    """Return a gw-full row: the --gw-* worker flags (not --gw-variant), JWTs of its algorithm."""
    worker_class = WORKER_CLASSES.get(args.gw_worker_class, args.gw_worker_class)
    access_log = not args.gw_no_access_log
    options = GwOptions(
        worker_class, args.gw_workers, args.gw_threads, access_log, not args.gw_no_metrics
    )
    return TargetSpec(name, "gw", gw=options, auth=FULL_ROWS[name], venv=args.gw_venv)


def target_specs(args: argparse.Namespace) -> list[TargetSpec]:
    """Return the targets to run, in the table's order.

    Raises:
        SystemExit: an unknown target name.
    """
    wanted = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(ALL_TARGETS))
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}; choose from {', '.join(ALL_TARGETS)}")
    specs: list[TargetSpec] = []
    for name in ALL_TARGETS:
        if name not in wanted:
            continue
        if name == "gw":
            specs.extend(gw_specs(args))
        elif name in FULL_ROWS:
            specs.append(full_spec(name, args))
            if args.gw_baseline:
                tree, venv = args.gw_baseline.resolve(), baseline_venv(args)
                full = full_spec(name, args)
                specs.append(replace(full, name=name + report.OLD, tree=tree, venv=venv))
        elif targets.PEERS[name].kind == "floor":
            specs.append(replace(targets.PEERS[name], venv=args.gw_venv))  # gw's Python
        else:
            specs.append(targets.PEERS[name])
    return with_dark_twins(specs) if args.gw_dark else specs


def with_dark_twins(specs: list[TargetSpec]) -> list[TargetSpec]:
    """Return ``specs`` with each gw row followed by its twin without access log and metrics."""
    out: list[TargetSpec] = []
    for spec in specs:
        out.append(spec)
        if spec.kind == "gw":
            dark = replace(spec.gw, access_log=False, metrics=False)
            out.append(replace(spec, name=spec.name + report.DARK, gw=dark))
    return out


def preflight(specs: Sequence[TargetSpec]) -> None:
    """Check that every tool the chosen targets need is here; install Express's packages.

    Raises:
        SystemExit: a tool is missing or gw does not import.
    """
    kinds = {spec.kind for spec in specs}
    node = kinds & set(NODE_KINDS)
    needed = ["wrk", "nginx"] + (["node", "npm"] if node else [])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)}")
    for kind in sorted(node):
        targets.ensure_node_deps(kind)
    for tree, venv in {(spec.tree, spec.venv) for spec in specs if spec.kind == "gw"}:
        _check_gw_imports(tree, venv)


def _check_gw_imports(tree: Path, venv: Path | None) -> None:
    """Exit with gw's own error if ``import gw.app`` fails in ``tree`` with ``venv``'s Python
    (None: the repo's)."""
    done = subprocess.run(
        [targets.python_path(venv), "-c", "import gw.app"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"gw in {tree} is not runnable (import gw.app failed):\n{done.stderr[-1500:]}"
        )
    if not (tree / "gunicorn.conf.py").exists():
        raise SystemExit(f"gw in {tree} is not runnable: no gunicorn.conf.py there")


def gw_python() -> str:
    """Return the interpreter of gw's virtualenv (it has PyJWT), else this one."""
    python = Path(targets.python_path())
    return str(python if python.exists() else sys.executable)


def auth_setups(specs: Sequence[TargetSpec], stack: contextlib.ExitStack) -> dict[str, AuthSetup]:
    """Mint fresh keys and tokens for each algorithm the gw-full rows use; serve the JWKS.

    Raises:
        ChildFailed: PyJWT could not mint them.
    """
    setups: dict[str, AuthSetup] = {}
    for alg in sorted({spec.auth for spec in specs if spec.auth}):
        try:
            credentials = tokens.mint_with(gw_python(), alg)
        except (RuntimeError, subprocess.TimeoutExpired) as ex:
            raise ChildFailed(str(ex)) from ex
        jwks_uri = None
        if credentials.jwks is not None:
            server = KeyServer(credentials.jwks).start()
            stack.callback(server.stop)
            jwks_uri = server.url
        setups[alg] = AuthSetup(credentials, jwks_uri)
    return setups


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt so that cleanup runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def start_all(
    specs: Sequence[TargetSpec], workdir: Path, stack: contextlib.ExitStack
) -> tuple[Target, list[Target]]:
    """Start the upstream and every target; each is stopped when ``stack`` closes."""
    setups = auth_setups(specs, stack)
    upstream = targets.launch_upstream(workdir)
    stack.callback(upstream.child.stop)
    targets.ready(upstream, timeout=10)
    started = []
    for spec in specs:
        target = targets.launch(spec, workdir, upstream, setups.get(spec.auth or ""))
        if target.child is not upstream.child:
            stack.callback(target.child.stop)
        started.append(targets.ready(target, timeout=30))
        if spec.kind == "gw":
            target.info["worker_class_seen"] = targets.worker_class_seen(target)
    return upstream, started


def measure_all(
    specs: Sequence[TargetSpec], plan: Plan, workdir: Path, together: bool = False
) -> tuple[list[Target], list[Sample]]:
    """Start everything, warm up, run the interleaved rounds, and stop everything."""
    with contextlib.ExitStack() as stack:
        upstream, started = start_all(specs, workdir, stack)
        targets.settle(started)
        groups = [f"upstream {upstream.child.pid}"]
        groups += [f"{t.name} {t.child.pid}" for t in started if t.child is not upstream.child]
        print("started (process groups): " + ", ".join(groups), flush=True)
        print(f"about {plan.estimate_seconds(len(started)):.0f}s of load", flush=True)
        warm_up(started, upstream, plan)
        dark = [t.name for t in started if together and t.name.endswith(report.DARK)]
        twins = {name: name.removesuffix(report.DARK) for name in dark}
        samples = run_rounds(
            started, upstream, plan, lambda line: print(line, flush=True), together=twins
        )
    return started, samples


def write_results(
    started: Sequence[Target],
    samples: Sequence[Sample],
    plan: Plan,
    output: Path,
    venv: Path | None = None,
) -> str:
    """Summarize, print-ready text and JSON file; return the text."""
    processes = {t.name: int(t.info.get("processes", 1)) for t in started}
    summaries = report.summarize(samples, plan, processes)
    facts = machine.describe(venv)
    text = table.render(summaries, plan, facts, samples)
    extra: dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "machine": facts,
        "targets": {t.name: {"kind": t.spec.kind, **t.info} for t in started},
        "table": text,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report.document(summaries, samples, plan, extra), indent=2))
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    specs = target_specs(args)
    preflight(specs)
    plan = make_plan(args)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    try:
        started, samples = measure_all(specs, plan, workdir, args.gw_dark_together)
    except (ChildFailed, LoadFailed) as ex:
        print(f"error: {ex}\n(logs in {workdir})", file=sys.stderr)
        args.keep_logs = True
        return 1
    except KeyboardInterrupt:
        print("interrupted: every process the benchmark started was stopped", file=sys.stderr)
        return 130
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(write_results(started, samples, plan, args.output, args.gw_venv), end="")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
