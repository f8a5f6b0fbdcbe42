"""Bounded fan-out benchmark of the local Pusher server (loopback only).

Three processes share the machine: the server (``python -m
flask_pusher.server``), a receiver holding N raw WebSocket subscribers on one
channel (a plain epoll loop, so that the client's own overhead stays small),
and this script, which sends M triggers through the signed HTTP API and
reports:

- deliveries per second and server CPU seconds per 100,000 deliveries
  (unpaced triggers; CPU from ``/proc/PID/stat``);
- p50/p99 trigger-to-delivery latency (CLOCK_MONOTONIC stamped into each
  event), unpaced and at a fixed trigger rate;
- server memory per idle connection (RSS delta / connections, ``/proc``);
- whether one server process holds ``--hold`` connections.

With ``--ops``, instead: server CPU per 100,000 deliveries with metrics off
(``--no-metrics``), on (the default), and on with a debug console watching
(``--console`` and a reader of ``/console/events``), each run ``--runs`` times
in turn on a fresh server; medians, and ratios to metrics off (issue 9: within
5%). Then the same three modes in one process, without sockets or HTTP: the
server's CPU (``time.process_time``) for ``Core.trigger``, ``Server.apply`` and
the flush to N subscribers whose transports take the bytes and do nothing, so
that the cost of counting is not lost in the noise of a shared machine.

Linux only. Run: ``python benchmarks/fanout.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
CHANNEL = "bench"
TICK = os.sysconf("SC_CLK_TCK")
MARKER = b'\\"t\\":'  # the stamp inside the double-encoded data string


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the receiver process -------------------------------------------------------


def handshake(port: int, subscribe: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    wanted = b"subscription_succeeded" if subscribe else b"connection_established"
    sent = False
    while wanted not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(data[:200].decode(errors="replace"))
        data += chunk
        if not sent and subscribe and b"connection_established" in data:
            frame = json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL}})
            payload = frame.encode()
            # Masked with a zero key: the payload bytes stay as they are.
            sock.sendall(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            sent = True
    sock.setblocking(False)
    return sock


def receiver(port: int, n: int, subscribe: bool) -> None:
    """Hold ``n`` connections; on ``measure M`` count M deliveries per socket."""
    raise_fd_limit()
    socks = {}
    for _ in range(n):
        sock = handshake(port, subscribe)
        socks[sock.fileno()] = sock
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLIN)
    stdin = sys.stdin.fileno()
    poller.register(stdin, select.EPOLLIN)
    print("ready", flush=True)
    pending = b""
    while True:
        while b"\n" not in pending:
            pending += os.read(stdin, 1024)
        line, _, pending = pending.partition(b"\n")
        command = line.split()
        if command[0] == b"close":
            return
        expected = int(command[1]) * n
        latencies: list[float] = []
        deadline = time.monotonic() + 120
        now = time.monotonic
        recv = os.read
        while len(latencies) < expected and now() < deadline:
            for fd, _ in poller.poll(1.0):
                if fd == stdin:
                    continue
                data = recv(fd, 262144)
                received = now()
                start = data.find(MARKER)
                while start >= 0:
                    end = data.index(b"}", start)
                    latencies.append(received - float(data[start + 6 : end]))
                    start = data.find(MARKER, end)
        latencies.sort()
        count = len(latencies)
        result = {
            "count": count,
            "p50_ms": round(latencies[count // 2] * 1000, 2) if count else None,
            "p99_ms": round(latencies[min(count - 1, int(count * 0.99))] * 1000, 2)
            if count
            else None,
            "max_ms": round(latencies[-1] * 1000, 2) if count else None,
        }
        print(json.dumps(result), flush=True)


class Receiver:
    """The parent's handle on a receiver process."""

    def __init__(self, port: int, n: int, subscribe: bool) -> None:
        command = [sys.executable, __file__, "--receiver", str(port), str(n)]
        command.append("subscribe" if subscribe else "idle")
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.n = n
        self.port = port
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        line = self.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"receiver failed to connect {n}: {line!r}")

    def start_measure(self, triggers: int) -> None:
        self.stdin.write(f"measure {triggers}\n")
        self.stdin.flush()

    def result(self) -> dict[str, Any]:
        line = self.stdout.readline()
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stdin.write("close\n")
            self.stdin.flush()
            self.proc.wait(60)


# -- the server and the triggers -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def start_server(port: int, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "flask_pusher.server"]
    command += ["--app-id", APP_ID, "--key", KEY, "--secret", SECRET, "--port", str(port)]
    command += extra or []
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the server exited") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def signed_url(port: int, method: str, path: str, body: bytes, extra: str = "") -> str:
    params = {"auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    for pair in filter(None, extra.split("&")):
        key, _, value = pair.partition("=")
        params[key] = value
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    signature = hmac.new(SECRET.encode(), f"{method}\n{path}\n{query}".encode(), "sha256")
    return f"http://127.0.0.1:{port}{path}?{query}&auth_signature={signature.hexdigest()}"


async def trigger(session: aiohttp.ClientSession, port: int, seq: int) -> None:
    path = f"/apps/{APP_ID}/events"
    data = json.dumps({"seq": seq, "t": time.monotonic()})
    body = json.dumps({"name": "tick", "channels": [CHANNEL], "data": data}).encode()
    async with session.post(signed_url(port, "POST", path, body), data=body) as response:
        if response.status != 200:
            raise RuntimeError(await response.text())


async def send_triggers(
    ports: Sequence[int], m: int, rate: float | None, in_flight: int, each: bool = False
) -> float:
    """Send ``m`` triggers, paced at ``rate``/s or unpaced with ``in_flight``
    concurrent requests, trigger ``i`` to ``ports[i % len(ports)]`` (to every
    port at once with ``each``: independent servers); return the seconds it
    took to send them."""

    async def trigger_one(session: aiohttp.ClientSession, seq: int) -> None:
        if each:
            await asyncio.gather(*(trigger(session, port, seq) for port in ports))
        else:
            await trigger(session, ports[seq % len(ports)], seq)

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        if rate is None:
            seqs = iter(range(m))

            async def worker() -> None:
                for seq in seqs:
                    await trigger_one(session, seq)

            await asyncio.gather(*(worker() for _ in range(in_flight)))
        else:
            for i in range(m):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await trigger_one(session, i)
        return time.perf_counter() - started


def measure(
    server: subprocess.Popen[bytes],
    rx: Receiver,
    m: int,
    rate: float | None,
    in_flight: int = 1,
) -> dict[str, Any]:
    return measure_all([server.pid], [rx], m, rate, in_flight)


def measure_all(
    pids: Sequence[int],
    receivers: Sequence[Receiver],
    m: int,
    rate: float | None,
    in_flight: int = 1,
    each: bool = False,
) -> dict[str, Any]:
    """Send ``m`` triggers, alternating over the receivers' ports (or to each,
    see :func:`send_triggers`); the CPU of
    ``pids`` (servers and whatever else serves them) per 100k deliveries,
    deliveries per second, and the latencies of all the receivers together."""
    for rx in receivers:
        rx.start_measure(m)
    cpu0 = sum(map(cpu_seconds, pids))
    started = time.perf_counter()
    asyncio.run(send_triggers([rx.port for rx in receivers], m, rate, in_flight, each))
    results = [rx.result() for rx in receivers]
    elapsed = time.perf_counter() - started
    cpu = sum(map(cpu_seconds, pids)) - cpu0
    expected = m * sum(rx.n for rx in receivers)
    count = sum(r["count"] for r in results)
    if count != expected:
        raise RuntimeError(f"lost deliveries: {count} of {expected}")
    if len(results) == 1:
        result = results[0]
    else:  # the pooled percentile lies between the receivers': the higher one, to be safe
        result = {"count": count}
        for key in ("p50_ms", "p99_ms", "max_ms"):
            result[key] = max(r[key] for r in results)
    result["deliveries_per_s"] = round(count / elapsed)
    result["server_cpu_s_per_100k"] = round(cpu / count * 100_000, 3)
    return result


def subscription_count(port: int) -> int:
    path = f"/apps/{APP_ID}/channels/{CHANNEL}"
    url = signed_url(port, "GET", path, b"", "info=subscription_count")
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        count: int = json.load(response).get("subscription_count", 0)
        return count


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = start_server(port)
    results: dict[str, Any] = {}
    receivers: list[Receiver] = []
    try:
        rx = Receiver(port, args.subscribers, subscribe=True)
        receivers.append(rx)
        measure(server, rx, 20, None)  # warm-up
        for in_flight in sorted({1, args.in_flight}):
            unpaced = measure(server, rx, args.triggers, None, in_flight)
            results[f"unpaced_{in_flight}_in_flight"] = unpaced
        m = int(args.rate * args.paced_seconds)
        results["paced"] = {"rate_per_s": args.rate, **measure(server, rx, m, args.rate)}
        rx.close()
        receivers.clear()
        server.terminate()
        server.wait(30)
        # Memory and capacity on a fresh server, warmed up by a few connections.
        port = free_port()
        server = start_server(port)
        Receiver(port, 20, subscribe=True).close()
        while subscription_count(port) != 0:
            time.sleep(0.05)
        before = rss_bytes(server.pid)
        idle = Receiver(port, args.idle, subscribe=True)
        receivers.append(idle)
        after = rss_bytes(server.pid)
        results["idle"] = {
            "connections": args.idle,
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "bytes_per_connection": round((after - before) / args.idle),
        }
        try:
            receivers.append(Receiver(port, args.hold - args.idle, subscribe=False))
            held = subscription_count(port) == args.idle  # the server still answers
        except (RuntimeError, OSError) as exc:
            held = False
            results["hold_error"] = repr(exc)
        results["hold"] = {
            "connections": args.hold,
            "held": held,
            "server_rss_mb": round(rss_bytes(server.pid) / 2**20, 1),
        }
    finally:
        for receiver_ in receivers:
            receiver_.proc.kill()
        server.terminate()
        server.wait(30)
    return results


class ConsoleReader:
    """A debug console page's stream, read in a thread: what a watching browser costs."""

    def __init__(self, port: int) -> None:
        import threading
        import urllib.request

        self.events = 0
        self.response = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/console/events", timeout=60
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.response:
                if line.startswith(b"data: "):
                    self.events += 1
        except (OSError, ValueError, AttributeError):  # closed under the reader
            pass

    def close(self) -> None:
        self.response.close()


OPS_MODES = {
    "metrics off": ["--no-metrics"],
    "metrics on": [],
    "metrics on, console open": ["--console"],
}


def run_ops(args: argparse.Namespace) -> dict[str, Any]:
    """CPU per 100k deliveries by mode, ``args.runs`` rounds of every mode in turn."""
    figures: dict[str, list[float]] = {mode: [] for mode in OPS_MODES}
    console_events: list[int] = []
    load_before = os.getloadavg()
    for _ in range(args.runs):
        for mode, extra in OPS_MODES.items():
            port = free_port()
            server = start_server(port, extra)
            reader = None
            rx = None
            try:
                if "--console" in extra:
                    reader = ConsoleReader(port)
                rx = Receiver(port, args.subscribers, subscribe=True)
                measure(server, rx, 20, None)  # warm-up
                result = measure(server, rx, args.triggers, None, args.in_flight)
                figures[mode].append(result["server_cpu_s_per_100k"])
                if reader is not None:
                    console_events.append(reader.events)
            finally:
                if rx is not None:
                    rx.close()
                if reader is not None:
                    reader.close()
                server.terminate()
                server.wait(30)
    medians = {mode: statistics.median(values) for mode, values in figures.items()}
    base = medians["metrics off"]
    return {
        "subscribers": args.subscribers,
        "triggers": args.triggers,
        "runs": args.runs,
        "cpu_s_per_100k": figures,
        "median": medians,
        "ratio_to_metrics_off": {m: round(v / base, 3) for m, v in medians.items()},
        "console_events_read": console_events,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


class NullTransport:
    """A transport that takes every write: only the server's own work is timed."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class OpenSocket:
    """Stands for a ``PusherSocket`` whose close has not begun."""

    closing = False

    def __init__(self) -> None:
        self.transport = NullTransport()


async def flush_cost(mode: str, subscribers: int, triggers: int) -> float:
    """Process CPU seconds per 100k deliveries of ``Core.trigger`` + ``apply`` + flush."""
    from flask_pusher.server.app import Server
    from flask_pusher.server.config import AppConfig
    from flask_pusher.server.console import Watcher

    extra = OPS_MODES[mode]
    server = Server(
        [AppConfig(APP_ID, KEY, SECRET)],
        metrics="--no-metrics" not in extra,
        console="--console" in extra,
    )
    app = server.core.apps_by_id[APP_ID]
    # The writer (server.writer since Server was split; the Server itself
    # before), so that older code can be measured in the same run (A/B).
    writer: Any = getattr(server, "writer", server)
    last_flush = "last_flush" if hasattr(writer, "last_flush") else "_last_flush"
    sockets = writer.sockets if hasattr(writer, "sockets") else writer._sockets
    subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL}})
    for _ in range(subscribers):
        conn = server.core.connect(app).result
        sockets[conn] = OpenSocket()
        server.core.receive(conn, subscribe)
    watcher = None
    console = server.console
    if console is not None:  # one page watching, as the HTTP API path would feed it
        watcher = Watcher(None, size=10**9)
        console.watchers.add(watcher)
        console.watching = True
        server._watched(True)
    payload = {"name": "tick", "channels": [CHANNEL], "data": json.dumps({"seq": 0, "t": 0.0})}
    started = time.process_time()
    for _ in range(triggers):
        effects = server.core.trigger(app, payload)
        if console is not None:
            console.api_message(app, payload, False, "http", "bench")
        setattr(writer, last_flush, float("-inf"))  # no coalescing delay: flush at once
        server.apply(effects)
        await asyncio.sleep(0)
        if watcher is not None:
            watcher.queue.clear()
    cpu = time.process_time() - started
    return cpu / (triggers * subscribers) * 100_000


def run_flush_costs(args: argparse.Namespace) -> dict[str, Any]:
    rounds = max(args.runs, 9)
    figures: dict[str, list[float]] = {mode: [] for mode in OPS_MODES}
    for _ in range(rounds):
        for mode in OPS_MODES:
            figures[mode].append(asyncio.run(flush_cost(mode, args.subscribers, args.triggers)))
    medians = {mode: statistics.median(values) for mode, values in figures.items()}
    base = medians["metrics off"]
    return {
        "rounds": rounds,
        "cpu_s_per_100k": figures,
        "median": medians,
        "ratio_to_metrics_off": {m: round(v / base, 4) for m, v in medians.items()},
        "loadavg_after": os.getloadavg(),
    }


def report_flush_costs(results: dict[str, Any]) -> None:
    print(f"In one process, no sockets: CPU s per 100k deliveries, median of {results['rounds']}")
    for mode, median in results["median"].items():
        ratio = results["ratio_to_metrics_off"][mode]
        print(f"  {mode:<26} {median:>7.4f}  x{ratio}   (target x <= 1.05)")
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in results['loadavg_after'])}")


def report_ops(results: dict[str, Any]) -> None:
    print(
        f"Server CPU s per 100k deliveries, {results['subscribers']} subscribers x "
        f"{results['triggers']} unpaced triggers, median of {results['runs']} runs"
    )
    for mode, median in results["median"].items():
        ratio = results["ratio_to_metrics_off"][mode]
        runs = ", ".join(f"{v:.3f}" for v in results["cpu_s_per_100k"][mode])
        print(f"  {mode:<26} {median:>7.3f}  x{ratio:<6} ({runs})   (target x <= 1.05)")
    print(f"  console events read per run: {results['console_events_read']}")
    before = " ".join(f"{x:.2f}" for x in results["loadavg_before"])
    after = " ".join(f"{x:.2f}" for x in results["loadavg_after"])
    print(f"  load average before: {before}; after: {after}")


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    n = args.subscribers
    for key, value in results.items():
        if key.startswith("unpaced"):
            flight = key.split("_")[1]
            print(f"Unpaced: {n} subscribers x {args.triggers} triggers, {flight} in flight")
            print(f"  deliveries/s                {value['deliveries_per_s']:>9,}")
            print(
                f"  server CPU s / 100k         {value['server_cpu_s_per_100k']:>9}"
                "   (target <= 0.45)"
            )
            print(f"  latency p50 / p99 ms        {value['p50_ms']:>9} / {value['p99_ms']}")
    p = results["paced"]
    print(f"Paced: {n} subscribers at {p['rate_per_s']:g} triggers/s")
    print(
        f"  latency p50 / p99 / max ms  {p['p50_ms']:>9} / {p['p99_ms']} / {p['max_ms']}"
        "   (target p99 < 25)"
    )
    i, h = results["idle"], results["hold"]
    print(f"Idle: {i['connections']} subscribed connections")
    print(f"  server memory / connection  {i['bytes_per_connection']:>9,} B (target <= 16384)")
    print(f"Hold: {h['connections']} connections held: {h['held']} (RSS {h['server_rss_mb']} MB)")
    if "hold_error" in results:
        print(f"  error: {results['hold_error']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--receiver":
        receiver(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "subscribe")
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--triggers", type=int, default=300)
    parser.add_argument(
        "--in-flight", type=int, default=4, help="concurrent unpaced trigger requests"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="paced triggers per second")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--hold", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--ops", action="store_true", help="compare metrics off, on, and a console watching"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds of --ops")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.triggers, args.paced_seconds = 100, 50, 2
        args.idle, args.hold = 200, 400
    if args.ops:
        raise_fd_limit()
        ops = run_ops(args)
        flush = run_flush_costs(args)
        if args.json:
            print(json.dumps({"sockets": ops, "in_process": flush}, indent=2))
        report_ops(ops)
        report_flush_costs(flush)
        return
    limit = raise_fd_limit()
    if limit < args.hold + 100:
        sys.exit(f"open-file limit {limit} is too low for {args.hold} connections")
    results = run(args)
    if args.json:
        print(json.dumps(results, indent=2))
    report(args, results)


if __name__ == "__main__":
    main()
