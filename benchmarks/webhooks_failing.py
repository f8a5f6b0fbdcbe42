"""Server memory while its webhook receiver answers 500 for good (loopback only).

The server (``python -m flask_pusher.server``, an app with one webhook URL and
client events allowed at 1,000/s) runs twice per round: from this checkout and
from a baseline git revision (``--baseline``, default ``main``, extracted with
``git archive``). This script holds the receiver (aiohttp, 500 to every POST)
and one WebSocket client that sends client events on a private channel at
``--rate`` per second for ``--seconds``, sampling the server's RSS
(``/proc/PID/status``) every second. Then it sends SIGTERM and times the exit.

Reports, as medians of ``--runs`` rounds: RSS growth over the run, the growth
rate over its last third (where a capped queue has levelled off), the time
from SIGTERM to exit, and the ratios to the baseline; plus the load average.

Linux only. Run: ``python benchmarks/webhooks_failing.py`` (``--quick`` for a
smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from fanout import rss_bytes  # this directory's fan-out benchmark

APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
CHANNEL = "private-bench"
ROOT = Path(__file__).resolve().parent.parent


async def failing_receiver() -> tuple[web.AppRunner, str, list[int]]:
    count = [0]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        count[0] += 1
        return web.Response(status=500, text="receiver down")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook", count


async def one_run(source: Path, args: argparse.Namespace) -> dict[str, Any]:
    runner, url, requests = await failing_receiver()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "apps.json"
        app: dict[str, Any] = {"app_id": APP_ID, "key": KEY, "secret": SECRET}
        app["webhooks"] = [url]
        app["max_client_events_per_second"] = int(args.rate * 2)
        config.write_text(json.dumps({"apps": [app]}))
        env = dict(os.environ, PYTHONPATH=str(source))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "flask_pusher.server", "--port", "0", "--config", str(config)),
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp,
        )
        assert proc.stderr is not None
        try:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            port = int(line.rsplit("http://127.0.0.1:", 1)[1].split(",")[0])
            log_lines: list[str] = []

            async def drain() -> None:
                assert proc.stderr is not None
                async for raw in proc.stderr:
                    log_lines.append(raw.decode(errors="replace"))

            drainer = asyncio.ensure_future(drain())
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"ws://127.0.0.1:{port}/app/{KEY}?protocol=7")
                hello = json.loads((await ws.receive_json(timeout=10))["data"])
                socket_id = hello["socket_id"]
                signature = hmac.new(
                    SECRET.encode(), f"{socket_id}:{CHANNEL}".encode(), hashlib.sha256
                ).hexdigest()
                auth = {"channel": CHANNEL, "auth": f"{KEY}:{signature}"}
                await ws.send_json({"event": "pusher:subscribe", "data": auth})
                while (await ws.receive_json(timeout=10))[
                    "event"
                ] != "pusher_internal:subscription_succeeded":
                    pass
                start_rss = rss_bytes(proc.pid)
                samples: list[tuple[float, int]] = []
                started = time.monotonic()
                sent = 0
                text = "x" * args.size
                next_sample = started
                while (now := time.monotonic()) - started < args.seconds:
                    due = int((now - started) * args.rate)
                    while sent < due:
                        frame = {
                            "event": "client-b",
                            "channel": CHANNEL,
                            "data": {"n": sent, "t": text},
                        }
                        await ws.send_str(json.dumps(frame))
                        sent += 1
                    if now >= next_sample:
                        samples.append((now - started, rss_bytes(proc.pid)))
                        next_sample += 1.0
                    await asyncio.sleep(0.005)  # pacing the sender, not synchronising
                end_rss = rss_bytes(proc.pid)
                tail = [s for s in samples if s[0] >= args.seconds * 2 / 3]
                slope = (tail[-1][1] - tail[0][1]) / max(tail[-1][0] - tail[0][0], 1e-9)
                stop = time.monotonic()
                logged_before = len(log_lines)
                proc.send_signal(signal.SIGTERM)
                async for _msg in ws:  # answer the 4200 close
                    pass
                await asyncio.wait_for(proc.wait(), 60)
                exit_seconds = time.monotonic() - stop
            await asyncio.wait_for(drainer, 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await runner.cleanup()
    after = log_lines[logged_before:]
    said = [ln.strip() for ln in log_lines if "shutdown" in ln and "webhook" in ln.lower()]
    return {
        "growth_mb": (end_rss - start_rss) / 1e6,
        "tail_mb_per_s": slope / 1e6,
        "exit_s": exit_seconds,
        "events_sent": sent,
        "receiver_requests": requests[0],
        "shutdown_log_lines": len(after),
        "shutdown_log_kb": sum(len(ln) for ln in after) / 1e3,
        "shutdown_line": said[-1][:200] if said else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--rate", type=float, default=300.0, help="client events per second")
    parser.add_argument("--size", type=int, default=100, help="characters of text per event")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="15 s, one run: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs = 15.0, 1
    with tempfile.TemporaryDirectory() as base:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "flask_pusher"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
        sources = {"this": ROOT, args.baseline: Path(base)}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
        for _ in range(args.runs):
            for name, source in sources.items():
                results[name].append(asyncio.run(one_run(source, args)))
    load = os.getloadavg()
    print(
        f"failing receiver, {args.rate:g} client events/s of {args.size} chars for "
        f"{args.seconds:g} s, median of {args.runs} runs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    medians = {}
    for name, runs in results.items():
        medians[name] = {
            k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "shutdown_line"
        }
        m = medians[name]
        print(
            f"  {name:>8}: RSS +{m['growth_mb']:.1f} MB, "
            f"last third {m['tail_mb_per_s']:+.2f} MB/s, "
            f"SIGTERM to exit {m['exit_s']:.2f} s, {m['receiver_requests']:.0f} requests "
            f"for {m['events_sent']:.0f} events; after SIGTERM {m['shutdown_log_lines']:.0f} "
            f"log lines, {m['shutdown_log_kb']:.1f} kB"
        )
        print(f"            last shutdown line: {runs[-1]['shutdown_line'] or '(none)'}")
    this, base_m = medians["this"], medians[args.baseline]
    print(
        f"  ratio this/{args.baseline}: RSS growth "
        f"{this['growth_mb'] / base_m['growth_mb'] if base_m['growth_mb'] else float('nan'):.3f}, "
        f"exit time {this['exit_s'] / base_m['exit_s']:.2f}"
    )


if __name__ == "__main__":
    main()
