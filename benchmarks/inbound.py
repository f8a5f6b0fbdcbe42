"""Bounded benchmark of what clients send (loopback only, Linux): pings, a
reconnect storm and client events, against baselines in the same run.

The servers compared, each started afresh for every measured step and run in
turn, ``--runs`` rounds (the order rotates from round to round):

- ``new``: this tree (or the one in ``--new DIR``), ``python -m
  flask_pusher.server``;
- ``old``: the tree of git revision ``--old`` (default ``main``), extracted
  with ``git archive`` into a temporary directory and run the same way with
  ``PYTHONPATH`` pointing at it (``--no-old`` skips it);
- ``soketi``: soketi 1.6.1 from ``node_modules`` (``npm ci``), client events
  on (``--no-soketi`` skips it).

The same load generator drives them all: ``benchmarks/inbound_load.js``, one
Node process of raw WebSockets (the ``ws`` package). Server CPU is utime +
stime from ``/proc/PID/stat``, summed over the server process and any
children, read just before and just after the measured step. The steps
(Pusher's WebSocket protocol, version 7:
https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/):

- ``ping``: ``--ping-connections`` connections send ``pusher:ping`` at
  ``--ping-rate`` per connection per second for ``--seconds``: server CPU per
  ping/pong round trip, and the pong delay (p50, p99, worst);
- ``storm``: ``--storm`` connections opened at once, each sending
  ``pusher:subscribe`` (one of ``--storm-channels`` public channels) on
  ``pusher:connection_established``:
  wall time until every one has its ``pusher_internal:subscription_succeeded``
  and server CPU per connection; for our servers also with subscription counts
  off (``storm-nocount``, ``enable_subscription_count: false``);
- ``events``: ``--event-connections`` connections over ``--channels`` private
  channels, each sending ``--event-rate`` client events per second for
  ``--seconds``: server CPU per client event sent, and the delivery latency
  (p50, p99) at the other members, stamped and read on the generator's clock;
- ``fanout``, the baseline of what the server sends: ``--fanout-subscribers``
  connections on one public channel receive ``--fanout-rate`` triggers per
  second through the signed HTTP API for ``--seconds``: server CPU per 100,000
  deliveries and the delivery latency (``benchmarks/fanout.py`` measures
  fan-out in more ways, for our server only).

Every ping must get its pong, every subscription its success, every client
event its delivery to every other member: a loss, an error frame or a timeout
stops the benchmark with an error. Medians of the rounds; ratios new/old and
new/soketi; the load average before and after.

Run: ``python benchmarks/inbound.py`` (about 5 minutes; ``--quick`` for a
smoke run; ``--json`` for the raw figures).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOAD = ROOT / "benchmarks" / "inbound_load.js"
SOKETI = ROOT / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
TICK = os.sysconf("SC_CLK_TCK")
# Client events per connection per second the servers allow: above the
# generator's rate, so that only a real burst is refused (both servers then
# pay for the same rate check). Pusher's own limit is 10 (pusher-protocol §5.7).
CLIENT_EVENT_LIMIT = 100
STEPS = ("ping", "storm", "storm-nocount", "events", "fanout")


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, whose CPU is the server's: ours forks with
    ``--workers``; soketi 1.6.1's ``start`` is one process (its 11 threads are
    in that process's own stat), but a child would count too."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids.extend(int(child) for child in f.read().split())
        except FileNotFoundError:
            pass
        i += 1
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants, in seconds."""
    total = 0
    for each in process_tree(pid):
        try:
            with open(f"/proc/{each}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


# -- the servers -------------------------------------------------------------------


class Server:
    """A server under test on a free port of 127.0.0.1; ``stop()`` ends it."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}{path}", timeout=1
                ) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)  # poll until it listens: no event to wait on across processes
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout:g} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)


class OurServer(Server):
    """``python -m flask_pusher.server`` from the tree at ``source``."""

    def __init__(
        self,
        name: str,
        source: Path,
        workdir: Path,
        counts: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        self.name, self.port = name, free_port()
        app = {
            "app_id": APP_ID,
            "key": KEY,
            "secret": SECRET,
            "max_client_events_per_second": CLIENT_EVENT_LIMIT,
            "enable_subscription_count": counts,
        }
        config = workdir / f"apps-{name}-{self.port}.json"
        config.write_text(json.dumps({"apps": [app]}))
        command = [sys.executable, "-m", "flask_pusher.server", "--config", str(config)]
        command += ["--port", str(self.port), *extra]
        env = {**os.environ, "PYTHONPATH": str(source)}
        self.proc = subprocess.Popen(command, cwd=source, env=env, stderr=subprocess.DEVNULL)
        self.wait_ready("/ready")


class SoketiServer(Server):
    """soketi 1.6.1 (pusher-servers §3) with the same app, client events on."""

    def __init__(self, name: str) -> None:
        self.name, self.port = name, free_port()
        env = {
            **os.environ,
            "SOKETI_HOST": "127.0.0.1",
            "SOKETI_PORT": str(self.port),
            "SOKETI_METRICS_ENABLED": "false",
            "SOKETI_METRICS_SERVER_PORT": str(free_port()),
            "SOKETI_DEFAULT_APP_ID": APP_ID,
            "SOKETI_DEFAULT_APP_KEY": KEY,
            "SOKETI_DEFAULT_APP_SECRET": SECRET,
            "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
            "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": str(CLIENT_EVENT_LIMIT),
        }
        self.proc = subprocess.Popen(
            ["node", str(SOKETI), "start"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready("/ready")


def check_source(source: Path) -> None:
    """Fail unless ``PYTHONPATH=source`` really imports the server from ``source``
    (the shared virtualenv also has an editable install of another tree)."""
    found = subprocess.run(
        [sys.executable, "-c", "import flask_pusher.server as s; print(s.__file__)"],
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(source.resolve()):
        raise RuntimeError(f"PYTHONPATH={source} imports {found}")


# -- the load generator ------------------------------------------------------------


class Load:
    """The parent's handle on one ``inbound_load.js`` process."""

    def __init__(self, port: int, mode: str, limit: float, **params: Any) -> None:
        config = {"port": port, "appId": APP_ID, "key": KEY, "secret": SECRET, "mode": mode}
        config.update(params)
        self.proc = subprocess.Popen(
            ["node", str(LOAD), json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.limit = limit  # seconds to wait for each line
        self.buffer = b""
        try:
            ready = self.read("ready")
            if ready["errors"]:
                raise RuntimeError(f"{mode}: setting up: {ready['first_error']}")
        except BaseException:
            self.proc.kill()  # never leave its connections behind
            self.proc.wait(10)
            raise

    def read(self, key: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.limit
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"the load generator gave no {key!r} in {self.limit:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the load generator exited ({self.proc.wait()})")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        if key not in message:
            raise RuntimeError(f"the load generator: {message}")
        result: dict[str, Any] = message[key]
        return result

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("close")
                self.proc.wait(30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def started(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def measure(server: Server, step: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measured step on a fresh ``server``; its figures, or RuntimeError
    on any loss, error or timeout."""
    if step == "ping":
        params = {"connections": args.ping_connections, "rate": args.ping_rate}
        params["seconds"] = args.seconds
        mode = "ping"
    elif step == "events":
        params = {"connections": args.event_connections, "channels": args.channels}
        params |= {"rate": args.event_rate, "seconds": args.seconds}
        mode = "events"
    elif step == "fanout":
        params = {"connections": args.fanout_subscribers, "rate": args.fanout_rate}
        params["seconds"] = args.seconds
        mode = "fanout"
    else:
        params = {"connections": args.storm, "channels": args.storm_channels}
        mode = "storm"
    params["timeout"] = args.timeout
    with started(server):
        load = Load(server.port, mode, args.timeout + args.seconds + 10, **params)
        try:
            cpu0, client0 = cpu_seconds(server.proc.pid), cpu_seconds(load.proc.pid)
            load.command("go")
            result = load.read("result")
            cpu = cpu_seconds(server.proc.pid) - cpu0
            client = cpu_seconds(load.proc.pid) - client0
        finally:
            load.close()
    if result["errors"] or result["lost"]:
        raise RuntimeError(
            f"{server.name} {step}: {result['lost']} lost, {result['errors']} errors "
            f"(first: {result['first_error']})"
        )
    if step == "ping":
        figures = {"cpu_us": cpu / result["pongs"] * 1e6}
    elif step == "events":
        figures = {"cpu_us": cpu / result["events"] * 1e6}
    elif step == "fanout":
        figures = {"cpu_s_100k": cpu / result["deliveries"] * 1e5}
    else:
        figures = {"cpu_us": cpu / result["connections"] * 1e6, "wall_s": result["wall_s"]}
    return {**figures, **result, "server_cpu_s": cpu, "client_cpu_s": client}


# -- the rounds and the report -----------------------------------------------------


FIGURES = {  # step: (figure, label, unit), the ones the report lists
    "ping": [
        ("cpu_us", "server CPU per ping/pong", "us"),
        ("p50_ms", "pong delay p50", "ms"),
        ("p99_ms", "pong delay p99", "ms"),
        ("max_ms", "pong delay, worst", "ms"),
    ],
    "storm": [
        ("wall_s", "wall time, all subscribed", "s"),
        ("cpu_us", "server CPU per connection", "us"),
        ("p50_ms", "subscribed after, p50", "ms"),
        ("p99_ms", "subscribed after, p99", "ms"),
        ("client_cpu_s", "load generator CPU", "s"),
    ],
    "storm-nocount": [
        ("wall_s", "wall time, all subscribed", "s"),
        ("cpu_us", "server CPU per connection", "us"),
        ("p50_ms", "subscribed after, p50", "ms"),
    ],
    "events": [
        ("cpu_us", "server CPU per client event", "us"),
        ("p50_ms", "delivery latency p50", "ms"),
        ("p99_ms", "delivery latency p99", "ms"),
        ("max_ms", "delivery latency, worst", "ms"),
        ("skipped", "events not sent, client late", "n"),
    ],
    "fanout": [
        ("cpu_s_100k", "server CPU per 100k deliveries", "s"),
        ("p50_ms", "delivery latency p50", "ms"),
        ("p99_ms", "delivery latency p99", "ms"),
        ("max_ms", "delivery latency, worst", "ms"),
    ],
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="inbound-bench-") as tmp:
        workdir = Path(tmp)
        sources = {"new": Path(args.new).resolve()}
        if args.old:
            old = workdir / "old"
            old.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.old, "flask_pusher"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            sources["old"] = old
        for source in sources.values():
            check_source(source)
        names = [*sources, *(["soketi"] if args.soketi else [])]

        def make(name: str, step: str) -> Server:
            if name == "soketi":
                return SoketiServer(name)
            extra = args.new_arg if name == "new" else ()
            return OurServer(
                name, sources[name], workdir, counts=step != "storm-nocount", extra=extra
            )

        load_before = os.getloadavg()
        for round_ in range(args.runs):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for step in args.steps:
                for name in order:
                    if name == "soketi" and step == "storm-nocount":
                        continue  # soketi sends no subscription counts (pusher-servers §3)
                    figures = measure(make(name, step), step, args)
                    results.setdefault(step, {}).setdefault(name, []).append(figures)
                    if args.verbose:
                        print(f"round {round_ + 1} {step} {name}: {figures}", file=sys.stderr)
        load_after = os.getloadavg()
    medians = {
        step: {
            name: {
                key: statistics.median(r[key] for r in runs)
                for key, *_ in FIGURES[step]
                if runs[0].get(key) is not None
            }
            for name, runs in by_name.items()
        }
        for step, by_name in results.items()
    }
    return {
        "servers": names,
        "old": args.old or None,
        "runs": args.runs,
        "sizes": {
            "ping": f"{args.ping_connections} connections x {args.ping_rate:g} pings/s "
            f"for {args.seconds:g} s",
            "storm": f"{args.storm} connections at once, {args.storm_channels} public channel(s)",
            "storm-nocount": "the same, subscription counts off (our servers only)",
            "events": f"{args.event_connections} connections, {args.channels} private channels, "
            f"{args.event_rate:g} client events/s each for {args.seconds:g} s",
            "fanout": f"{args.fanout_subscribers} subscribers, {args.fanout_rate:g} triggers/s "
            f"through the HTTP API for {args.seconds:g} s",
        },
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "median": medians,
        "rounds": results,
    }


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def rst_rows(args: argparse.Namespace) -> list[tuple[str, str, list[str], str, str]]:
    """The rows of docs/performance.rst's side-by-side table: (measure, step,
    figures, unit, issue 19's target)."""
    fanout = f"Fan-out, {args.fanout_subscribers:,} subscribers, {args.fanout_rate:g} triggers/s"
    return [
        (f"{fanout}: CPU per 100k deliveries", "fanout", ["cpu_s_100k"], "s", ""),
        (f"{fanout}: delivery latency p50 / p99", "fanout", ["p50_ms", "p99_ms"], "ms", ""),
        ("Pings: server CPU per ping/pong", "ping", ["cpu_us"], "µs", "x <= 1.0"),
        ("Pings: pong delay p50 / p99", "ping", ["p50_ms", "p99_ms"], "ms", ""),
        (
            f"Storm of {args.storm:,}: wall time until all subscribed",
            "storm",
            ["wall_s"],
            "s",
            "x <= 1.0",
        ),
        (
            f"Storm of {args.storm:,}: server CPU per connection",
            "storm",
            ["cpu_us"],
            "µs",
            "x <= 1.0",
        ),
        (
            "Storm, subscription counts off: CPU per connection",
            "storm-nocount",
            ["cpu_us"],
            "µs",
            "",
        ),
        ("Client events: server CPU per event", "events", ["cpu_us"], "µs", ""),
        (
            "Client events: delivery latency p50 / p99",
            "events",
            ["p50_ms", "p99_ms"],
            "ms",
            "p50 <= 2 ms",
        ),
    ]


def rst_table(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The side-by-side table of docs/performance.rst from ``results``' medians
    (``new`` against ``soketi``), to paste over the page's."""
    lines = [
        ".. list-table::",
        "    :header-rows: 1",
        "    :widths: 46 14 14 12 14",
        "",
        "    * - Measure",
        "      - This server",
        "      - soketi 1.6.1",
        "      - Ratio",
        "      - Target",
    ]
    medians = results["median"]
    for label, step, keys, unit, target in rst_rows(args):
        if step not in medians:
            continue
        new, soketi = medians[step].get("new", {}), medians[step].get("soketi", {})
        cells = []
        for figures in (new, soketi):
            values = [figures.get(key) for key in keys]
            shown = " / ".join(number(v) for v in values)
            cells.append("" if None in values else f"{shown} {unit}")
        ratios = [
            f"x{new[key] / soketi[key]:.2f}" if new.get(key) and soketi.get(key) else ""
            for key in keys
        ]
        cells.append(" / ".join(ratios) if all(ratios) else "")
        lines.append(f"    * - {label}")
        lines += [f"      - {cell}".rstrip() for cell in [*cells, target]]
    return "\n".join(lines)


def report(results: dict[str, Any]) -> None:
    names = results["servers"]
    baselines = [b for b in ("old", "soketi") if b in names]
    runs = results["runs"]
    print(f"Inbound path, median of {runs} run{'s' if runs > 1 else ''}", end="")
    print(f" (old = {results['old']})" if results["old"] else "")
    header = f"  {'':<36}" + "".join(f"{name:>10}" for name in names)
    header += "".join(f"{'new/' + b:>12}" for b in baselines)
    for step, medians in results["median"].items():
        print(f"{step}: {results['sizes'][step]}")
        print(header)
        for key, label, unit in FIGURES[step]:
            row = f"  {label + ' (' + unit + ')':<36}"
            values = {name: medians.get(name, {}).get(key) for name in names}
            row += "".join(f"{number(v):>10}" for v in values.values())
            for b in baselines:
                new, base = values.get("new"), values.get(b)
                ratio = f"x{new / base:.2f}" if new is not None and base else "-"
                row += f"{ratio:>12}"
            print(row)
    before = " ".join(f"{x:.2f}" for x in results["loadavg_before"])
    after = " ".join(f"{x:.2f}" for x in results["loadavg_after"])
    print(f"load average before: {before}; after: {after}; {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--new",
        default=str(ROOT),
        metavar="DIR",
        help="the tree measured as new: a directory holding flask_pusher/ (default: this one)",
    )
    parser.add_argument(
        "--new-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument of the new server's command line, such as --new-arg=--loop=asyncio",
    )
    parser.add_argument("--old", default="main", help="git revision of the old tree")
    parser.add_argument("--no-old", dest="old", action="store_const", const="")
    parser.add_argument("--no-soketi", dest="soketi", action="store_false")
    parser.add_argument("--runs", type=int, default=3, help="rounds of every server")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--seconds", type=float, default=10.0, help="of pings, of events")
    parser.add_argument("--ping-connections", type=int, default=1000)
    parser.add_argument("--ping-rate", type=float, default=2.0, help="per connection per s")
    parser.add_argument("--storm", type=int, default=5000, help="connections at once")
    parser.add_argument(
        "--storm-channels",
        type=int,
        default=500,
        help="public channels the storm's connections spread over (10 each by default)",
    )
    parser.add_argument("--event-connections", type=int, default=200)
    parser.add_argument("--channels", type=int, default=20, help="private, for client events")
    parser.add_argument("--event-rate", type=float, default=8.0, help="per connection per s")
    parser.add_argument("--fanout-subscribers", type=int, default=1000)
    parser.add_argument("--fanout-rate", type=float, default=20.0, help="triggers per second")
    parser.add_argument("--timeout", type=float, default=120.0, help="of one step, seconds")
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--rst", action="store_true", help="also print docs/performance.rst's table"
    )
    parser.add_argument("--verbose", action="store_true", help="print each step's figures")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.storm, args.storm_channels = 1, 2.0, 500, 50
        args.ping_connections, args.event_connections, args.channels = 100, 40, 4
        args.fanout_subscribers = 100
        args.timeout = 30.0
    if shutil.which("node") is None or not (ROOT / "node_modules" / "ws").is_dir():
        sys.exit("needs node and node_modules (npm ci --no-audit --no-fund)")
    if args.soketi and not SOKETI.is_file():
        sys.exit(f"soketi is not installed at {SOKETI} (npm ci), or pass --no-soketi")
    limit = raise_fd_limit()
    if limit < 2 * args.storm + 200:
        sys.exit(f"open-file limit {limit} is too low for a storm of {args.storm}")
    results = run(args)
    if args.json:
        print(json.dumps(results, indent=2))
    report(results)
    if args.rst:
        print(rst_table(results, args))


if __name__ == "__main__":
    main()
