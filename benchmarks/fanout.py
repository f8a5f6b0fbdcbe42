"""Bounded fan-out benchmark of the local Pusher server (loopback only).

Starts ``python -m flask_pusher.server`` in a subprocess, connects N raw
WebSocket subscribers to one channel, sends M triggers through the signed HTTP
API, and prints:

- deliveries per second and server CPU seconds per 100,000 deliveries
  (unpaced triggers; CPU read from ``/proc/PID/stat``);
- p50/p99 trigger-to-delivery latency, unpaced and at a fixed trigger rate;
- server memory per idle connection (RSS delta / connections, ``/proc``);
- whether one server process holds ``--hold`` connections.

Linux only (``/proc``). Run: ``python benchmarks/fanout.py [--quick]``.
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
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import aiohttp

APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
CHANNEL = "bench"
TICK = os.sysconf("SC_CLK_TCK")


# -- the server process ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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


def start_server(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "flask_pusher.server"]
    command += ["--app-id", APP_ID, "--key", KEY, "--secret", SECRET, "--port", str(port)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "died") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


# -- a minimal WebSocket subscriber -------------------------------------------


class Subscriber(asyncio.Protocol):
    """Raw RFC 6455 client: handshake, subscribe, count and time deliveries."""

    def __init__(self, bench: Bench, subscribe: bool) -> None:
        self.bench = bench
        self.subscribe = subscribe
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def send_text(self, text: str) -> None:
        payload = text.encode()
        assert len(payload) < 126
        # Masked with a zero key: the payload bytes stay as they are.
        assert self.transport is not None
        self.transport.write(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(buf[:80]).decode()))
                return
            del buf[: end + 4]
            self.upgraded = True
        pos = 0
        size = len(buf)
        bench = self.bench
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            marker = payload.find(b'seq\\":')
            if marker >= 0:
                end = payload.index(b"}", marker)
                bench.delivered(int(payload[marker + 6 : end]))
            elif b"connection_established" in payload:
                if self.subscribe:
                    self.send_text(
                        json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL}})
                    )
                else:
                    self.ready.set_result(None)
            elif b"subscription_succeeded" in payload and not self.ready.done():
                self.ready.set_result(None)
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))


class Bench:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self.count = 0
        self.expected = 0
        self.done: asyncio.Future[None] | None = None
        self.subscribers: list[Subscriber] = []

    def delivered(self, seq: int) -> None:
        self.latencies.append(time.perf_counter() - self.sent[seq])
        self.count += 1
        if self.count == self.expected and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def connect(self, n: int, subscribe: bool, batch: int = 250) -> None:
        loop = asyncio.get_running_loop()
        for start in range(0, n, batch):
            made = []
            for _ in range(min(batch, n - start)):
                sub = Subscriber(self, subscribe)
                made.append(sub)
                await loop.create_connection(lambda s=sub: s, "127.0.0.1", self.port)  # type: ignore[misc]
            await asyncio.wait_for(asyncio.gather(*(s.ready for s in made)), 60)
            self.subscribers.extend(made)

    def close_all(self) -> None:
        for sub in self.subscribers:
            if sub.transport is not None:
                sub.transport.close()
        self.subscribers.clear()

    def signed_url(self, body: bytes) -> str:
        path = f"/apps/{APP_ID}/events"
        params = {
            "auth_key": KEY,
            "auth_timestamp": str(int(time.time())),
            "auth_version": "1.0",
            "body_md5": hashlib.md5(body).hexdigest(),
        }
        query = "&".join(f"{k}={params[k]}" for k in sorted(params))
        signature = hmac.new(SECRET.encode(), f"POST\n{path}\n{query}".encode(), "sha256")
        return f"http://127.0.0.1:{self.port}{path}?{query}&auth_signature={signature.hexdigest()}"

    async def trigger(self, session: aiohttp.ClientSession, seq: int) -> None:
        body = json.dumps(
            {"name": "tick", "channels": [CHANNEL], "data": json.dumps({"seq": seq})}
        ).encode()
        url = self.signed_url(body)
        self.sent[seq] = time.perf_counter()
        async with session.post(url, data=body) as response:
            if response.status != 200:
                raise RuntimeError(await response.text())

    async def run_triggers(
        self, session: aiohttp.ClientSession, first: int, m: int, rate: float | None
    ) -> float:
        """Send ``m`` triggers (paced at ``rate``/s or unpaced); wait for delivery."""
        self.latencies = []
        self.count = 0
        self.expected = m * len(self.subscribers)
        self.done = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        for i in range(m):
            if rate is not None:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.trigger(session, first + i)
        await asyncio.wait_for(self.done, 120)
        return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = start_server(port)
    results: dict[str, Any] = {}
    try:
        bench = Bench(port)
        async with aiohttp.ClientSession() as session:
            await bench.connect(args.subscribers, subscribe=True)
            await bench.run_triggers(session, 0, 20, None)  # warm-up
            cpu0 = cpu_seconds(server.pid)
            elapsed = await bench.run_triggers(session, 1000, args.triggers, None)
            cpu = cpu_seconds(server.pid) - cpu0
            deliveries = bench.count
            results["unpaced"] = {
                "subscribers": args.subscribers,
                "triggers": args.triggers,
                "deliveries": deliveries,
                "deliveries_per_s": round(deliveries / elapsed),
                "server_cpu_s_per_100k": round(cpu / deliveries * 100_000, 3),
                "p50_ms": round(percentile(bench.latencies, 0.5) * 1000, 2),
                "p99_ms": round(percentile(bench.latencies, 0.99) * 1000, 2),
            }
            m = int(args.rate * args.paced_seconds)
            cpu0 = cpu_seconds(server.pid)
            await bench.run_triggers(session, 100_000, m, args.rate)
            cpu = cpu_seconds(server.pid) - cpu0
            results["paced"] = {
                "subscribers": args.subscribers,
                "rate_per_s": args.rate,
                "triggers": m,
                "p50_ms": round(percentile(bench.latencies, 0.5) * 1000, 2),
                "p99_ms": round(percentile(bench.latencies, 0.99) * 1000, 2),
                "max_ms": round(max(bench.latencies) * 1000, 2),
                "server_cpu_s_per_100k": round(cpu / bench.count * 100_000, 3),
            }
            bench.close_all()
            await wait_for_connections(session, port, 0)
            before = rss_bytes(server.pid)
            await bench.connect(args.idle, subscribe=True)
            await wait_for_connections(session, port, args.idle)
            after = rss_bytes(server.pid)
            results["idle"] = {
                "connections": args.idle,
                "rss_before_mb": round(before / 2**20, 1),
                "rss_after_mb": round(after / 2**20, 1),
                "bytes_per_connection": round((after - before) / args.idle),
            }
            extra = args.hold - args.idle
            held = True
            try:
                await bench.connect(extra, subscribe=False)  # each got its greeting
            except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
                held = False
                results["hold_error"] = repr(exc)
            results["hold"] = {
                "connections": len(bench.subscribers),
                "held": held and len(bench.subscribers) == args.hold,
                "server_rss_mb": round(rss_bytes(server.pid) / 2**20, 1),
            }
            bench.close_all()
    finally:
        server.terminate()
        server.wait(30)
    return results


async def wait_for_connections(session: aiohttp.ClientSession, port: int, n: int) -> None:
    """Wait until the server counts ``n`` subscribers on the channel."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = await channel_info(session, port)
        if info.get("subscription_count", 0) == n:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"server did not reach {n} subscribers")


async def channel_info(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    path = f"/apps/{APP_ID}/channels/{CHANNEL}"
    params = {
        "auth_key": KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "info": "subscription_count",
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    signature = hmac.new(SECRET.encode(), f"GET\n{path}\n{query}".encode(), "sha256").hexdigest()
    url = f"http://127.0.0.1:{port}{path}?{query}&auth_signature={signature}"
    async with session.get(url) as response:
        result: dict[str, Any] = await response.json()
        return result


def report(results: dict[str, Any]) -> None:
    u, p, i, h = results["unpaced"], results["paced"], results["idle"], results["hold"]
    print(f"Unpaced: {u['subscribers']} subscribers x {u['triggers']} triggers")
    print(f"  deliveries/s               {u['deliveries_per_s']:>10,}")
    print(f"  server CPU s / 100k deliv. {u['server_cpu_s_per_100k']:>10}   (target <= 0.45)")
    print(f"  latency p50 / p99 (ms)     {u['p50_ms']:>10} / {u['p99_ms']}")
    print(f"Paced: {p['subscribers']} subscribers at {p['rate_per_s']} triggers/s")
    print(
        f"  latency p50 / p99 / max ms {p['p50_ms']:>10} / {p['p99_ms']} / {p['max_ms']}"
        "   (target p99 < 25)"
    )
    print(f"Idle: {i['connections']} connections")
    print(f"  server memory / connection {i['bytes_per_connection']:>10,} B   (target <= 16384)")
    print(
        f"Hold: {h['connections']} connections held: {h['held']} "
        f"(server RSS {h['server_rss_mb']} MB)"
    )
    if "hold_error" in results:
        print(f"  error: {results['hold_error']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--triggers", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--hold", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.subscribers, arguments.triggers, arguments.paced_seconds = 100, 50, 2
        arguments.idle, arguments.hold = 200, 400
    limit = raise_fd_limit()
    if limit < arguments.hold + 100:
        sys.exit(f"open-file limit {limit} is too low for {arguments.hold} connections")
    figures = asyncio.run(main(arguments))
    print(json.dumps(figures, indent=2) if arguments.json else "", end="")
    report(figures)
