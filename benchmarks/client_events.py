"""Client-event latency of the local Pusher server (loopback only, bounded).

``--connections`` raw WebSocket clients (one epoll loop, so that the client's
own overhead stays small) join ``--channels`` private
channels, as many on each; every client sends ``--rate`` client events per
second (``client-move``, paced as one schedule for all), each stamped with
CLOCK_MONOTONIC, to its channel's other members. Reported per server tree:
p50/p99 send-to-delivery latency, server CPU seconds per 1,000 events
(``/proc/PID/stat``), and deliveries lost (none allowed).

Compare trees in one run: ``--tree OLD --tree NEW`` runs each in turn
(``--case NAME=TREE::'SERVER ARGS'`` for trees with their own server flags),
``--runs`` rounds alternated (A B A B ...), and prints medians with the load
average. Pusher's limit of 10 client events per second per connection
(https://pusher.com/docs/channels/using_channels/events/#triggering-client-events)
bounds ``--rate``.

Run: ``python benchmarks/client_events.py --tree /path/to/old --tree .``
(``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import select
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_server(tree: str, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    """``python -m flask_pusher.server`` of ``tree`` with ``extra`` flags."""
    command = [sys.executable, "-m", "flask_pusher.server", "--app-id", APP_ID]
    command += ["--key", KEY, "--secret", SECRET, "--port", str(port), *extra]
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    # cwd: python -m puts the working directory first on sys.path.
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env, cwd=tree)
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


MARK = b'"t":'  # the stamp inside each client event's data object


def masked(payload: bytes) -> bytes:
    """A client text frame masked with the zero key (RFC 6455 section 5.3)."""
    size = len(payload)
    head = bytes((0x81, 0x80 | size)) if size < 126 else struct.pack("!BBH", 0x81, 0xFE, size)
    return head + b"\0\0\0\0" + payload


def join(port: int, channel: str) -> socket.socket:
    """A raw WebSocket client subscribed to ``channel`` (blocking until it is)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"socket_id" not in data or not data.rstrip().endswith(b"}"):
        data += sock.recv(65536)
    socket_id = data.split(b'socket_id\\":\\"', 1)[1].split(b"\\", 1)[0].decode()
    sig = hmac.new(SECRET.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256)
    body = {"channel": channel, "auth": f"{KEY}:{sig.hexdigest()}"}
    sock.sendall(masked(json.dumps({"event": "pusher:subscribe", "data": body}).encode()))
    data = b""
    while b"subscription_succeeded" not in data:
        data += sock.recv(65536)
    sock.setblocking(False)
    return sock


def stamps(buffer: bytes, now: float, latencies: list[float]) -> bytes:
    """Record the latency of each complete stamp in ``buffer``; return what to keep."""
    pos = 0
    while True:
        i = buffer.find(MARK, pos)
        if i < 0:
            return buffer[max(pos, len(buffer) - len(MARK) + 1) :]
        j = buffer.find(b",", i)
        if j < 0:
            return buffer[i:]
        latencies.append(now - float(buffer[i + len(MARK) : j]))
        pos = j


def measure(tree: str, extra: list[str], args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = start_server(tree, port, extra)
    latencies: list[float] = []
    clients: list[socket.socket] = []
    try:
        channels = [f"private-room-{i % args.channels}" for i in range(args.connections)]
        clients = [join(port, channel) for channel in channels]
        poller = select.epoll()
        buffers = {sock.fileno(): b"" for sock in clients}
        by_fd = {sock.fileno(): sock for sock in clients}
        for fd in by_fd:
            poller.register(fd, select.EPOLLIN)
        per_channel = args.connections // args.channels
        interval = 1 / (args.rate * args.connections)
        count = int(args.seconds * args.rate * args.connections)
        expected = count * (per_channel - 1)
        cpu0 = cpu_seconds(server.pid)
        started = time.monotonic()
        n = 0
        deadline = started + args.seconds + 10
        while len(latencies) < expected and time.monotonic() < deadline:
            now = time.monotonic()
            while n < count and started + n * interval <= now:
                i = n % len(clients)
                data = {"t": time.monotonic(), "n": n}
                frame = {"event": "client-move", "channel": channels[i], "data": data}
                clients[i].send(masked(json.dumps(frame).encode()))
                n += 1
            wait = started + n * interval - time.monotonic() if n < count else 0.05
            for fd, _ in poller.poll(max(wait, 0)):
                chunk = by_fd[fd].recv(262144)
                buffers[fd] = stamps(buffers[fd] + chunk, time.monotonic(), latencies)
        cpu = cpu_seconds(server.pid) - cpu0
        poller.close()
    finally:
        for sock in clients:
            sock.close()
        server.terminate()
        server.wait(30)
    ordered = sorted(latencies)
    return {
        "events": count,
        "lost": expected - len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
        "server_cpu_s_per_1k_events": round(cpu / count * 1000, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tree", action="append", help="a source tree to run (repeatable)")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--rate", type=float, default=8.0, help="events/s per connection")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-arg", action="append", default=[], help="passed to the server")
    parser.add_argument(
        "--case", action="append", default=[], help="NAME=TREE::'SERVER ARGS' (instead of --tree)"
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if args.rate > 10:
        parser.error("--rate: Pusher allows at most 10 client events per second per connection")
    if args.quick:
        args.connections, args.channels, args.seconds, args.runs = 20, 4, 2.0, 1
    cases = [(tree, tree, list(args.server_arg)) for tree in args.tree or ["."]]
    if args.case:
        cases = []
        for case in args.case:
            name, _, rest = case.partition("=")
            tree, _, flags = rest.partition("::")
            cases.append((name, tree, [*args.server_arg, *shlex.split(flags)]))
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in cases}
    for _ in range(args.runs):
        for label, tree, extra in cases:  # alternated: A B A B ...
            runs[label].append(measure(tree, extra, args))
    results: dict[str, Any] = {"loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(
        f"{args.connections} connections, {args.channels} private channels, "
        f"{args.rate:g} client events/s each, {args.seconds:g} s; medians of {args.runs}"
    )
    for tree, figures in runs.items():
        median = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
        results[tree] = {"runs": figures, "median": median}
        print(
            f"  {tree}: p50 {median['p50_ms']} ms, p99 {median['p99_ms']} ms, "
            f"server CPU {median['server_cpu_s_per_1k_events']} s/1k events, "
            f"lost {max(f['lost'] for f in figures)}"
        )
    print(f"  load average before {load_before}, after {results['loadavg_after']}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
