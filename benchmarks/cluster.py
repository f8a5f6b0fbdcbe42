"""Bounded benchmark of a cluster over Redis beside one server alone (loopback only).

Scenarios run in turn ``--runs`` times in the same run, each on fresh
processes with the same subscribers on one channel:

- *single*: one server process without Redis;
- *cluster*: ``--nodes`` server processes (default 2) joined through one
  ``redis-server`` (Debian's ``/usr/bin/redis-server``, started here on a free
  port with ``--save "" --appendonly no`` and stopped at the end), the
  subscribers split evenly over the nodes;
- *split* (only with ``--scenarios ... split``): a control, the cluster's
  processes and subscribers without Redis, each trigger sent to every one
  (so it pays one HTTP request per node and trigger): what splitting the
  subscribers over processes costs on this machine, Redis aside.

Every server process is this script in ``--node`` mode: a
:class:`flask_pusher.server.app.Server` with ``metrics=False`` (and
``redis_url`` in the cluster), served by ``start_site`` until SIGTERM. The
subscribers are ``fanout.py``'s receivers (raw WebSockets on an epoll loop, one
process per node); triggers go through the signed HTTP API, alternating over
the nodes. For each scenario, unpaced (``--in-flight`` requests at once) and
paced (``--rate`` triggers/s): deliveries per second, CPU seconds per 100,000
deliveries of all the server processes plus, in the cluster, Redis
(``/proc/PID/stat``), and p50/p99 trigger-to-receipt latency (CLOCK_MONOTONIC
stamped into each event; with several receivers the higher of their
percentiles, the pooled one lies between them). Medians over the runs, the
ratios cluster/single, the load average before and after, and the targets of
issue 8: CPU per delivery at most 1.5x the single process, p99 at 20
triggers/s under 30 ms.

Linux only. Run: ``python benchmarks/cluster.py`` (about 2.5 minutes, 4 with
split; ``--quick`` for a smoke run, ``--runs 1`` or ``--paced-seconds 5`` to
shorten; ``--profile DIR`` for py-spy samples of every server process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from fanout import APP_ID
from fanout import cpu_seconds
from fanout import free_port
from fanout import KEY
from fanout import measure_all
from fanout import raise_fd_limit
from fanout import Receiver
from fanout import SECRET

SCENARIOS = ("single", "cluster", "split")

# -- a server process -------------------------------------------------------------


def node(port: int, redis_url: str | None, prefix: str) -> None:
    """Serve on ``port`` (in the cluster of ``redis_url``) until SIGTERM."""
    from flask_pusher.server.app import Server
    from flask_pusher.server.app import start_site
    from flask_pusher.server.app import stop_site
    from flask_pusher.server.config import AppConfig

    async def serve() -> None:
        server = Server(
            [AppConfig(APP_ID, KEY, SECRET)],
            metrics=False,
            redis_url=redis_url,
            redis_prefix=prefix,
        )
        runner, _ = await start_site(server, "127.0.0.1", port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await stop_site(runner)

    raise_fd_limit()
    asyncio.run(serve())


def start_node(port: int, redis_url: str | None, prefix: str) -> subprocess.Popen[bytes]:
    """Start a server process; return once its ``GET /ready`` answers 200."""
    command = [sys.executable, __file__, "--node", str(port), prefix]
    if redis_url is not None:
        command.append(redis_url)
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return proc
        except (OSError, urllib.error.URLError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited ({proc.returncode})")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the server on port {port} was not ready within 30 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` into ``out`` (collapsed stacks) until SIGINT."""
    command = ["py-spy", "record", "--pid", str(pid), "--rate", "250", "--nonblocking"]
    command += ["--format", "raw", "--output", out]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached
    return spy


# -- Redis ------------------------------------------------------------------------


def start_redis(binary: str) -> tuple[subprocess.Popen[bytes], int]:
    """A ``redis-server`` on a free loopback port, without persistence."""
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{binary} exited ({proc.returncode})") from None
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{binary} did not answer PING within 10 s")


# -- the scenarios ----------------------------------------------------------------


def run_scenario(
    args: argparse.Namespace, name: str, redis: subprocess.Popen[bytes], redis_url: str, run: int
) -> dict[str, Any]:
    """One round of scenario ``name`` on fresh server processes."""
    nodes = 1 if name == "single" else args.nodes
    if name != "cluster":
        redis_url_: str | None = None
    else:
        redis_url_ = redis_url
    each = name == "split"
    ports = [free_port() for _ in range(nodes)]
    procs: list[subprocess.Popen[bytes]] = []
    receivers: list[Receiver] = []
    try:
        for port in ports:
            procs.append(start_node(port, redis_url_, f"bench-{run}"))
        shares = [args.subscribers // nodes + (i < args.subscribers % nodes) for i in range(nodes)]
        for port, n in zip(ports, shares, strict=True):
            receivers.append(Receiver(port, n, subscribe=True))
        pids = [proc.pid for proc in procs]
        if redis_url_ is not None:
            pids.append(redis.pid)
        measure_all(pids, receivers, 20, None, each=each)  # warm-up
        results: dict[str, Any] = {}
        paced_triggers = int(args.rate * args.paced_seconds)
        for mode, m, rate, in_flight in (
            ("unpaced", args.triggers, None, args.in_flight),
            ("paced", paced_triggers, args.rate, 1),
        ):
            redis_cpu0 = cpu_seconds(redis.pid)
            spies = []
            if args.profile:
                for i, proc in enumerate(procs):
                    out = os.path.join(args.profile, f"{name}-{mode}-run{run}-node{i}.txt")
                    spies.append(start_spy(proc.pid, out))
            result = measure_all(pids, receivers, m, rate, in_flight, each)
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            if redis_url_ is not None:
                redis_cpu = cpu_seconds(redis.pid) - redis_cpu0
                result["redis_cpu_s_per_100k"] = round(redis_cpu / result["count"] * 100_000, 3)
            results[mode] = result
        return results
    finally:
        for rx in receivers:
            rx.close()
        for proc in procs:
            stop(proc)


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    redis, redis_port = start_redis(args.redis_server)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        for i in range(args.runs):
            order = SCENARIOS if i % 2 == 0 else SCENARIOS[::-1]  # drift hits both alike
            for name in order:
                if name in args.scenarios:
                    runs[name].append(run_scenario(args, name, redis, redis_url, i))
    finally:
        stop(redis)
    return {
        "subscribers": args.subscribers,
        "nodes": args.nodes,
        "runs": runs,
        "median": {name: medians(results) for name, results in runs.items() if results},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "seconds": round(time.monotonic() - started, 1),
    }


FIGURES = (
    "deliveries_per_s",
    "server_cpu_s_per_100k",
    "redis_cpu_s_per_100k",
    "p50_ms",
    "p99_ms",
    "max_ms",
)


def medians(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {
        mode: {
            key: statistics.median(r[mode][key] for r in results)
            for key in FIGURES
            if key in results[0][mode]
        }
        for mode in ("unpaced", "paced")
    }


# -- the report -------------------------------------------------------------------


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    median = results["median"]
    print(
        f"{args.subscribers:,} subscribers on one channel; single process vs "
        f"{args.nodes} nodes + Redis (cluster); medians of {args.runs} runs; ratios to single"
    )
    shown = [name for name in SCENARIOS if name in median]
    header = "".join(f"{n:>10}" + (f"{'ratio':>7}" if n != "single" else "") for n in shown)
    print(f"{'':34}{header}   target")

    def row(label: str, mode: str, key: str, target: str = "", fmt: str = ",.3f") -> None:
        base = median["single"][mode].get(key) if "single" in median else None
        cells = ""
        for name in shown:
            value = median[name][mode].get(key)
            cells += f"{format(value, fmt) if value is not None else '-':>10}"
            if name != "single":
                cells += f"{f'x{value / base:.2f}' if base and value is not None else '-':>7}"
        print(f"  {label:<32}{cells}   {target}")

    for mode, title in (
        ("unpaced", f"Unpaced: {args.triggers} triggers, {args.in_flight} in flight"),
        ("paced", f"Paced: {args.rate:g} triggers/s for {args.paced_seconds:g} s"),
    ):
        print(title)
        row("deliveries/s", mode, "deliveries_per_s", fmt=",.0f")
        row("CPU s / 100k deliveries", mode, "server_cpu_s_per_100k", "cluster x <= 1.5")
        row("  of which Redis", mode, "redis_cpu_s_per_100k")
        p99_target = "cluster p99 < 30 ms" if mode == "paced" else ""
        row("latency p50 ms", mode, "p50_ms", fmt=".2f")
        row("latency p99 ms", mode, "p99_ms", p99_target, fmt=".2f")
        row("latency max ms", mode, "max_ms", fmt=".2f")
    for name, runs in results["runs"].items():
        if runs:
            cpu = [r["unpaced"]["server_cpu_s_per_100k"] for r in runs]
            p99 = [r["paced"]["p99_ms"] for r in runs]
            print(f"Per run, {name}: unpaced CPU s/100k {cpu}; p99 ms at {args.rate:g}/s {p99}")
    before = " ".join(f"{x:.2f}" for x in results["loadavg_before"])
    after = " ".join(f"{x:.2f}" for x in results["loadavg_after"])
    print(f"Load average before: {before}; after: {after} ({os.cpu_count()} CPUs)")
    print(f"Took {results['seconds']} s")
    if args.profile:
        print(f"py-spy profiles (collapsed stacks) in {args.profile}; the figures include its cost")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--node":
        node(int(sys.argv[2]), sys.argv[4] if len(sys.argv) > 4 else None, sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=2, help="server processes in the cluster")
    parser.add_argument("--triggers", type=int, default=300, help="unpaced triggers per run")
    parser.add_argument(
        "--in-flight", type=int, default=4, help="concurrent unpaced trigger requests"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="paced triggers per second")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3, help="rounds of both scenarios")
    parser.add_argument(
        "--redis-server",
        default=shutil.which("redis-server") or "/usr/bin/redis-server",
        help="the redis-server binary (Debian's package redis-server)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=SCENARIOS,
        default=["single", "cluster"],
        help="which to run (the ratios need single): single, cluster, and split, a "
        "control: the cluster's processes without Redis, each trigger sent to every one",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="sample every server process with py-spy (pip install py-spy) during each "
        "measurement, collapsed stacks into DIR; the figures then include its cost",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.triggers, args.paced_seconds, args.runs = 100, 50, 2, 1
    if not os.path.exists(args.redis_server):
        sys.exit(f"no redis-server at {args.redis_server}: install it or pass --redis-server")
    if args.profile:
        if shutil.which("py-spy") is None:
            sys.exit("--profile needs py-spy on PATH: pip install py-spy")
        os.makedirs(args.profile, exist_ok=True)
    results = run(args)
    if args.json:
        print(json.dumps(results, indent=2))
    report(args, results)


if __name__ == "__main__":
    main()
