"""Bounded benchmark of the Python client (flask_pusher.channels) against pysher 1.0.8.

Two figures, each the median of ``--runs`` runs, each run in a fresh process,
ours and pysher's in turn in the same run, with the load average:

- ``rate``: events per second one client process decodes and dispatches to a
  channel callback on one connection. A blaster server (aiohttp, in its own
  process) answers the handshake and the subscription, then writes
  ``--events`` ready-made channel events as fast as it can; the client counts
  them in a ``bind`` callback, from the first to the last. Target: 20,000/s.
- ``memory``: RSS per connection with ``--connections`` connections in one
  process, each subscribed to a channel of the local server
  (``python -m flask_pusher.server``): RSS after minus RSS after a warm-up of
  20, over the connections added. Ours share one aiohttp session
  (``ChannelsClient(..., session=...)``); pysher has a thread per connection.
  Target: 20 KB.

Linux only (``/proc``). Loopback only. Run:
``python benchmarks/client.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fanout

KEY = fanout.KEY
FRAME = json.dumps(
    {"event": "e", "channel": "c", "data": json.dumps({"id": 12345, "text": "hello, world"})}
)
CONNECTED = json.dumps(
    {
        "event": "pusher:connection_established",
        "data": json.dumps({"socket_id": "1.1", "activity_timeout": 120}),
    }
)
SUCCEEDED = json.dumps(
    {"event": "pusher_internal:subscription_succeeded", "channel": "c", "data": "{}"}
)


# -- the blaster server process ---------------------------------------------------


def blaster(port: int, events: int) -> None:
    """Serve one client at a time: handshake, subscription, then ``events`` frames."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_str(CONNECTED)
        async for msg in ws:
            if "pusher:subscribe" in msg.data:
                await ws.send_str(SUCCEEDED)
                for _ in range(events):
                    await ws.send_str(FRAME)
        return ws

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/app/{key}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()  # until terminated

    asyncio.run(serve())


def start_blaster(port: int, events: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "_blaster", str(port), str(events)])
    fanout_wait(port, proc)
    return proc


def fanout_wait(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the server exited") from None
            time.sleep(0.05)
    raise RuntimeError("the server did not start")


# -- the client processes: one figure each, printed as JSON -----------------------


def rate_ours(port: int, events: int) -> float:
    from flask_pusher.channels import ChannelsClient

    async def main() -> float:
        done = asyncio.Event()
        count = 0
        start = 0.0

        def on_event(event: Any) -> None:
            nonlocal count, start
            if count == 0:
                start = time.perf_counter()
            count += 1
            if count == events:
                done.set()

        async with ChannelsClient(KEY, host="127.0.0.1", port=port, use_tls=False) as client:
            client.subscribe("c").bind("e", on_event)
            await asyncio.wait_for(done.wait(), 120)
            return (events - 1) / (time.perf_counter() - start)

    return asyncio.run(main())


def rate_pysher(port: int, events: int) -> float:
    import logging

    import pysher

    logging.getLogger("pysher").setLevel(logging.CRITICAL)
    done = threading.Event()
    count = 0
    start = 0.0

    def on_event(data: Any) -> None:
        nonlocal count, start
        if count == 0:
            start = time.perf_counter()
        count += 1
        if count == events:
            done.set()

    client = pysher.Pusher(KEY, custom_host="127.0.0.1", port=port, secure=False)

    def connected(data: Any) -> None:
        client.subscribe("c").bind("e", on_event)

    client.connection.bind("pusher:connection_established", connected)
    client.connect()
    if not done.wait(120):
        raise RuntimeError(f"pysher received {count} of {events}")
    return (events - 1) / (time.perf_counter() - start)  # no disconnect(): it can hang


def memory_ours(port: int, n: int) -> float:
    import aiohttp

    from flask_pusher.channels import ChannelsClient

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=0)  # the default 100 would hold the rest
        async with aiohttp.ClientSession(connector=connector) as session:

            async def connect(i: int) -> ChannelsClient:
                client = ChannelsClient(
                    KEY, host="127.0.0.1", port=port, use_tls=False, session=session
                )
                await client.connect(60)
                await client.subscribe(fanout.CHANNEL).wait_subscribed(60)
                return client

            warm = [await connect(i) for i in range(20)]
            before = fanout.rss_bytes(os.getpid())
            clients = []
            for start in range(0, n, 100):
                clients += await asyncio.gather(
                    *(connect(i) for i in range(start, min(n, start + 100)))
                )
            after = fanout.rss_bytes(os.getpid())
            for client in warm + clients:
                await client.disconnect()
            return (after - before) / n

    return asyncio.run(main())


def memory_pysher(port: int, n: int) -> float:
    import logging

    import pysher

    logging.getLogger("pysher").setLevel(logging.CRITICAL)

    def connect() -> Any:
        connected = threading.Event()
        client = pysher.Pusher(KEY, custom_host="127.0.0.1", port=port, secure=False)
        client.connection.bind("pusher:connection_established", lambda data: connected.set())
        client.connect()
        if not connected.wait(60):
            raise RuntimeError("a pysher client did not connect")
        client.subscribe(fanout.CHANNEL)  # pysher binds too late to see its confirmation
        return client

    def wait_subscribed(count: int) -> None:
        deadline = time.monotonic() + 60
        while fanout.subscription_count(port) != count:  # the server's own count
            if time.monotonic() > deadline:
                raise RuntimeError("pysher clients did not subscribe")
            time.sleep(0.05)

    warm = [connect() for _ in range(20)]
    wait_subscribed(20)
    before = fanout.rss_bytes(os.getpid())
    clients = [connect() for _ in range(n)]
    wait_subscribed(20 + n)
    after = fanout.rss_bytes(os.getpid())
    del warm, clients  # pysher's disconnect() can wait for ever; its threads are daemons
    return (after - before) / n


FIGURES = {
    ("rate", "ours"): rate_ours,
    ("rate", "pysher"): rate_pysher,
    ("memory", "ours"): memory_ours,
    ("memory", "pysher"): memory_pysher,
}


def measure(kind: str, who: str, port: int, amount: int) -> float:
    """Run one figure in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "_measure", kind, who, str(port), str(amount)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind}/{who} failed: {out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    fanout.raise_fd_limit()
    load_before = os.getloadavg()
    figures: dict[str, dict[str, list[float]]] = {
        "rate": {"ours": [], "pysher": []},
        "memory": {"ours": [], "pysher": []},
    }
    port = fanout.free_port()
    blast = start_blaster(port, args.events)
    try:
        for _ in range(args.runs):
            for who in ("ours", "pysher"):
                figures["rate"][who].append(measure("rate", who, port, args.events))
    finally:
        blast.terminate()
        blast.wait(10)
    for _ in range(args.runs):
        for who in ("ours", "pysher"):
            port = fanout.free_port()
            server = fanout.start_server(port)
            try:
                figures["memory"][who].append(measure("memory", who, port, args.connections))
            finally:
                server.terminate()
                server.wait(10)
    medians = {k: {w: statistics.median(v) for w, v in per.items()} for k, per in figures.items()}
    return {
        "events": args.events,
        "connections": args.connections,
        "runs": args.runs,
        "all": figures,
        "median": medians,
        "rate_ratio_ours_to_pysher": round(medians["rate"]["ours"] / medians["rate"]["pysher"], 2),
        "memory_ratio_ours_to_pysher": round(
            medians["memory"]["ours"] / medians["memory"]["pysher"], 2
        ),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def report(results: dict[str, Any]) -> None:
    m = results["median"]
    print(
        f"events per run {results['events']}, connections {results['connections']},"
        f" runs {results['runs']}"
    )
    print(
        f"rate    ours {m['rate']['ours']:>10,.0f} events/s"
        f"   pysher {m['rate']['pysher']:>10,.0f} events/s"
        f"   ratio x{results['rate_ratio_ours_to_pysher']}   (target >= 20,000)"
    )
    print(
        f"memory  ours {m['memory']['ours'] / 1024:>10.1f} KB/conn"
        f"    pysher {m['memory']['pysher'] / 1024:>10.1f} KB/conn"
        f"    ratio x{results['memory_ratio_ours_to_pysher']}   (target <= 20 KB)"
    )
    print(f"load average before {results['loadavg_before']}, after {results['loadavg_after']}")
    print(json.dumps(results))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_blaster":
        blaster(int(sys.argv[2]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        fanout.raise_fd_limit()
        kind, who, port, amount = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(FIGURES[(kind, who)](port, amount)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per rate run")
    parser.add_argument("--connections", type=int, default=1000, help="connections per memory run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each figure (median)")
    parser.add_argument(
        "--quick", action="store_true", help="10,000 events, 200 connections, 1 run"
    )
    args = parser.parse_args()
    if args.quick:
        args.events, args.connections, args.runs = 10_000, 200, 1
    report(run(args))


if __name__ == "__main__":
    main()
