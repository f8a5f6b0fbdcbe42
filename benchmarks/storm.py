"""A reconnect storm and pings against the local Pusher server (loopback, bounded).

Storm: ``--connections`` raw WebSocket clients connect at once, as after a
deploy or a network blip; each sends ``pusher:subscribe`` for a public channel
on ``pusher:connection_established`` (20 channels). Reported: the wall time
until every client holds ``pusher_internal:subscription_succeeded``, and the
server's CPU seconds per connection (``/proc/PID/stat``). Then pings: each
connection sends ``--pings`` ``pusher:ping`` frames, one at a time, and waits
for each ``pusher:pong``; reported: server CPU per ping.

The client is one plain epoll loop (non-blocking sockets), so that its own
overhead stays small. Compare trees and settings in one run:
``--tree OLD --tree NEW`` (each with ``--server-arg`` flags for all, or
``--variant NAME=ARGS`` for named server flag sets such as
``--variant asyncio='--loop asyncio' --variant uvloop='--loop uvloop'``),
or ``--case NAME=TREE::ARGS`` for each tree and flag set to compare),
``--runs`` rounds alternated, medians with the load average.
``--no-counts`` serves the app with ``enable_subscription_count`` off.

Run: ``python benchmarks/storm.py`` (``--quick`` for a smoke run). Linux only.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import os
import resource
import select
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
TICK = os.sysconf("SC_CLK_TCK")
REQUEST = (
    f"GET /app/{KEY}?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PING = json.dumps({"event": "pusher:ping", "data": {}}).encode()


def masked(payload: bytes) -> bytes:
    """A client text frame masked with the zero key (the payload unchanged)."""
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def subscribe_frame(n: int) -> bytes:
    data = {"channel": f"storm-{n % 20}"}
    return masked(json.dumps({"event": "pusher:subscribe", "data": data}).encode())


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(tree: str, port: int, extra: list[str], counts: bool) -> subprocess.Popen[bytes]:
    app = {"app_id": APP_ID, "key": KEY, "secret": SECRET, "enable_subscription_count": counts}
    config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
    with config:
        json.dump({"apps": [app]}, config)
    command = [sys.executable, "-m", "flask_pusher.server", "--config", config.name]
    command += ["--port", str(port), *extra]
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    # cwd: python -m puts the working directory first on sys.path.
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env, cwd=tree)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                os.unlink(config.name)
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {command}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def storm(port: int, n: int) -> tuple[float, list[socket.socket]]:
    """Open ``n`` connections at once; return the seconds until all subscribed."""
    poller = select.epoll()
    socks: dict[int, socket.socket] = {}
    state: dict[int, int] = {}  # 0 connecting, 1 upgrading, 2 subscribing, 3 done
    buffers: dict[int, bytes] = {}
    started = time.monotonic()
    for i in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        socks[sock.fileno()] = sock
        state[sock.fileno()] = 0
        buffers[sock.fileno()] = b""
        poller.register(sock.fileno(), select.EPOLLOUT)
        del i
    done = 0
    index = {fd: i for i, fd in enumerate(socks)}
    deadline = started + 120
    while done < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"storm: {done} of {n} subscribed after 120 s")
        for fd, _events in poller.poll(1.0):
            sock = socks[fd]
            if state[fd] == 0:
                key = base64.b64encode(os.urandom(16)).decode()
                sock.send(REQUEST.format(key=key).encode())
                state[fd] = 1
                poller.modify(fd, select.EPOLLIN)
                continue
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed: {buffers[fd][:200]!r}")
            buffers[fd] += data
            if state[fd] == 1 and b"connection_established" in buffers[fd]:
                sock.send(subscribe_frame(index[fd]))
                state[fd], buffers[fd] = 2, b""
            elif state[fd] == 2 and b"subscription_succeeded" in buffers[fd]:
                state[fd], buffers[fd] = 3, b""
                poller.unregister(fd)
                done += 1
    elapsed = time.monotonic() - started
    poller.close()
    for sock in socks.values():
        sock.setblocking(True)
    return elapsed, list(socks.values())


def pings(socks: list[socket.socket], count: int) -> None:
    """Each connection pings ``count`` times, one at a time, all connections at once."""
    poller = select.epoll()
    left = {s.fileno(): count for s in socks}
    by_fd = {s.fileno(): s for s in socks}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        sock.send(masked(PING))
    waiting = len(socks)
    deadline = time.monotonic() + 300
    while waiting:
        if time.monotonic() > deadline:
            raise RuntimeError("pings: no pong within 300 s")
        for fd, _ in poller.poll(1.0):
            data = by_fd[fd].recv(65536)
            if not data:
                raise ConnectionError("closed during pings")
            pongs = data.count(b"pusher:pong")
            if not pongs:
                continue  # a subscription count or the server's own ping
            left[fd] -= pongs
            if left[fd] > 0:
                by_fd[fd].send(masked(PING))
            else:
                poller.unregister(fd)
                waiting -= 1
    poller.close()


def measure(tree: str, extra: list[str], args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = start_server(tree, port, extra, not args.no_counts)
    socks: list[socket.socket] = []
    try:
        time.sleep(0.5)  # the server's start-up out of the figures
        cpu0 = cpu_seconds(server.pid)
        elapsed, socks = storm(port, args.connections)
        time.sleep(0.2)  # the subscription counts that follow the last join
        cpu1 = cpu_seconds(server.pid)
        pings(socks, args.pings)
        cpu2 = cpu_seconds(server.pid)
    finally:
        for sock in socks:
            sock.close()
        server.terminate()
        server.wait(30)
    return {
        "storm_wall_s": round(elapsed, 3),
        "storm_cpu_us_per_connection": round((cpu1 - cpu0) / args.connections * 1e6, 1),
        "ping_cpu_us": round((cpu2 - cpu1) / (args.connections * args.pings) * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tree", action="append", help="a source tree to run (repeatable)")
    parser.add_argument("--variant", action="append", default=[], help="NAME='SERVER ARGS'")
    parser.add_argument(
        "--case", action="append", default=[], help="NAME=TREE::'SERVER ARGS' (instead)"
    )
    parser.add_argument("--server-arg", action="append", default=[], help="for every server")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--pings", type=int, default=10, help="pings per connection")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-counts", action="store_true", help="subscription counts off")
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.connections, args.pings, args.runs = 300, 3, 1
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    variants = [v.partition("=") for v in args.variant] or [("", "", "")]
    cases = [
        (f"{tree} {name}".strip(), tree, [*args.server_arg, *shlex.split(flags)])
        for tree in args.tree or ["."]
        for name, _, flags in variants
    ]
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
    counts = "off" if args.no_counts else "on"
    print(
        f"Storm of {args.connections} connections (subscription counts {counts}), then "
        f"{args.pings} pings each; medians of {args.runs}"
    )
    for label, figures in runs.items():
        median = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
        results[label] = {"runs": figures, "median": median}
        print(
            f"  {label}: storm {median['storm_wall_s']} s wall, "
            f"{median['storm_cpu_us_per_connection']} us CPU/connection; "
            f"{median['ping_cpu_us']} us CPU/ping"
        )
    print(f"  load average before {load_before}, after {results['loadavg_after']}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
