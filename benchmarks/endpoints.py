"""Per-request time of the extension's routes against minimal hand-written views.

For each case the script times our route and a minimal Flask view that does the same
work with the official ``pusher`` library, both through Flask's test client in this
process, and prints the per-request medians of several runs and their ratio.

Targets (issue 2): ratio <= 1.2 for single requests; a batch of 100 channels in less
than 0.15x the time of 100 single private-channel requests.

Then "a view that triggers 3 events" (issue 10): the app behind a real WSGI server,
its client pointed at a stub Pusher HTTP API that answers after ``--latency`` (30 ms),
timed from the request until the HTTP client has the whole response, with
``defer=True`` and without, against a view that triggers nothing; and the requests
the stub receives per view. Target: with ``defer``, within 1.2x the view that triggers
nothing, and the 3 events in one request.

    python benchmarks/endpoints.py [--runs 7] [--seconds 0.3] [--views 20] [--latency 0.03]
        [--gap 0.05] [--only-triggers]

Bounded: each measurement runs for about ``--seconds`` (at least 20 requests), or
``--views`` requests per run for the trigger views.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import pusher as pusher_http
from flask import abort
from flask import Flask
from flask import jsonify
from flask import request
from flask.testing import FlaskClient
from pusher.signature import sign
from werkzeug.serving import make_server

from flask_pusher import Pusher
from flask_pusher.testing import auth_body
from flask_pusher.testing import AUTH_CONTENT_TYPE
from flask_pusher.testing import batch_auth_body
from flask_pusher.testing import user_auth_body

APP_ID, KEY, SECRET = "3", "278d425bdf160c739803", "7ad3773142a6692b25b8"
MASTER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
CONFIG = {
    "PUSHER_APP_ID": APP_ID,
    "PUSHER_KEY": KEY,
    "PUSHER_SECRET": SECRET,
    "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY,
}
SOCKET_ID = "1234.1234"
MEMBER = {"user_id": "42", "user_info": {"name": "Ann"}}
USER = {"id": "42", "user_info": {"name": "Ann"}}
handled: list[Any] = []


def can_subscribe(channel_name: str, socket_id: str) -> bool:
    return True


def on_event(event: dict[str, Any]) -> None:
    handled.append(event["name"])


def ours() -> Flask:
    app = Flask("ours")
    app.config.update(CONFIG)
    pusher = Pusher(app)
    pusher.auth(can_subscribe)
    pusher.channel_data(
        lambda channel_name, socket_id: {"user_id": "42", "user_info": {"name": "Ann"}}
    )
    pusher.user_data(lambda socket_id: USER)
    for name in ("channel_occupied", "member_added"):
        pusher.webhooks.on(name)(on_event)
    return app


def minimal() -> Flask:
    """What a developer would write by hand with the official library."""
    app = Flask("minimal")
    client = pusher_http.Pusher(
        app_id=APP_ID, key=KEY, secret=SECRET, encryption_master_key_base64=MASTER_KEY
    )

    def authorize(channel: str, socket_id: str) -> dict[str, Any]:
        if not can_subscribe(channel, socket_id):
            abort(403)
        data = MEMBER if channel.startswith("presence-") else None
        result: dict[str, Any] = client.authenticate(channel, socket_id, data)
        if "shared_secret" in result:
            result["shared_secret"] = result["shared_secret"].decode()
        return result

    @app.post("/pusher/auth")
    def auth() -> Any:
        form = request.form
        if "channel_name" in form:
            return jsonify(authorize(form["channel_name"], form["socket_id"]))
        body, i = {}, 0
        while f"channel_name[{i}]" in form:
            name = form[f"channel_name[{i}]"]
            body[name] = {"status": 200, "data": authorize(name, form["socket_id"])}
            i += 1
        return jsonify(body)

    @app.post("/pusher/user-auth")
    def user_auth() -> Any:
        return jsonify(client.authenticate_user(request.form["socket_id"], USER))

    @app.post("/pusher/events")
    def webhooks() -> Any:
        body = client.validate_webhook(
            request.headers["X-Pusher-Key"],
            request.headers["X-Pusher-Signature"],
            request.get_data(),
        )
        if body is None:
            abort(401)
        for event in body["events"]:
            if event["name"] in ("channel_occupied", "member_added"):
                on_event(event)
        return jsonify({})

    return app


def webhook() -> tuple[bytes, dict[str, str]]:
    events = [{"name": "channel_occupied", "channel": f"c{i}"} for i in range(5)]
    events += [
        {"name": "member_added", "channel": "presence-r", "user_id": str(i)} for i in range(5)
    ]
    text = json.dumps({"time_ms": int(time.time() * 1000), "events": events})
    return text.encode(), {"X-Pusher-Key": KEY, "X-Pusher-Signature": sign(SECRET, text)}


def auth_post(body: str) -> Callable[[FlaskClient], Any]:
    return lambda c: c.post("/pusher/auth", data=body, content_type=AUTH_CONTENT_TYPE)


WEBHOOK_BODY, WEBHOOK_HEADERS = webhook()
CASES: dict[str, Callable[[FlaskClient], Any]] = {
    "private auth": auth_post(auth_body(SOCKET_ID, "private-room")),
    "presence auth": auth_post(auth_body(SOCKET_ID, "presence-room")),
    "encrypted auth": auth_post(auth_body(SOCKET_ID, "private-encrypted-room")),
    "batch of 10": auth_post(batch_auth_body(SOCKET_ID, [f"private-{i}" for i in range(10)])),
    "batch of 100": auth_post(batch_auth_body(SOCKET_ID, [f"private-{i}" for i in range(100)])),
    "user auth": lambda c: c.post(
        "/pusher/user-auth", data=user_auth_body(SOCKET_ID), content_type=AUTH_CONTENT_TYPE
    ),
    "webhook, 10 events": lambda c: c.post(
        "/pusher/events", data=WEBHOOK_BODY, headers=WEBHOOK_HEADERS
    ),
}


def per_request(client: FlaskClient, send: Callable[[FlaskClient], Any], seconds: float) -> float:
    """Seconds per request, timed over about ``seconds``."""
    response = send(client)
    assert response.status_code == 200, response.get_data()
    count, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            send(client)
        count += 10
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 20:
            return elapsed / count


class SlowPusher(ThreadingHTTPServer):
    """A stub of Pusher's HTTP API: answers ``{}`` after ``latency`` seconds, and
    counts the requests by the last part of their path (``events``, ``batch_events``)."""

    daemon_threads = True

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.paths: list[str] = []
        self.received = threading.Condition()
        super().__init__(("127.0.0.1", 0), StubHandler)

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        with self.received:
            if not self.received.wait_for(lambda: len(self.paths) >= count, timeout):
                raise RuntimeError(f"the stub got {len(self.paths)} requests, not {count}")


class StubHandler(BaseHTTPRequestHandler):
    server: SlowPusher

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.server.latency)  # the network and Pusher's own work
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        with self.server.received:
            self.server.paths.append(self.path.split("?")[0].rsplit("/", 1)[-1])
            self.server.received.notify_all()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def trigger_app(stub_port: int) -> Flask:
    app = Flask("triggers")
    app.config.update(
        PUSHER_APP_ID=APP_ID,
        PUSHER_KEY=KEY,
        PUSHER_SECRET=SECRET,
        PUSHER_HOST="127.0.0.1",
        PUSHER_PORT=stub_port,
        PUSHER_SSL=False,
    )
    pusher = Pusher(app)

    @app.post("/nothing")
    def nothing() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/three/<mode>")
    def three(mode: str) -> dict[str, Any]:
        for n in range(3):
            pusher.trigger(f"order-{n}", "updated", {"n": n}, defer=mode == "deferred")
        return {"ok": True}

    return app


TRIGGER_CASES = {
    "triggers nothing": ("/nothing", 0),
    "3 events, defer": ("/three/deferred", 1),
    "3 events, no defer": ("/three/now", 3),
}


def time_view(
    port: int, stub: SlowPusher, path: str, sends: int, gap: float
) -> tuple[float, list[str]]:
    """Seconds until the client has the whole response, and what the stub received.

    Waits for the stub to get the view's ``sends`` requests (deferred ones leave
    after the response), then ``gap`` seconds more for the app to read the stub's
    answer, so that each request is timed alone: a deferred send still costs the
    app's process CPU time, but not the user's wait.
    """
    before = len(stub.paths)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    start = time.perf_counter()
    conn.request("POST", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    assert response.status == 200, body
    conn.close()
    stub.wait_for(before + sends)
    time.sleep(gap)
    return elapsed, stub.paths[before:]


def serve_trigger_app(stub_port: int, ports: multiprocessing.Queue[int]) -> None:
    """The app behind werkzeug's threaded server, in a process of its own: deferred
    sends then run beside the timing client, not in its GIL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, trigger_app(stub_port), threaded=True)
    ports.put(server.server_port)
    server.serve_forever()


def trigger_benchmark(runs: int, views: int, latency: float, gap: float) -> None:
    stub = SlowPusher(latency)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    context = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[int] = context.Queue()
    app_process = context.Process(
        target=serve_trigger_app, args=(stub.server_address[1], ports), daemon=True
    )
    app_process.start()
    port = ports.get(timeout=60)
    try:
        print(
            f"\na view that triggers 3 events, Pusher answering after {latency * 1000:.0f} ms"
            f" (median of {runs} runs x {views} requests, {gap * 1000:.0f} ms apart)"
        )
        print(f"{'case':<20} {'response (ms)':>13} {'x nothing':>10} {'requests':>9}")
        medians: dict[str, list[float]] = {name: [] for name in TRIGGER_CASES}
        ratios: dict[str, list[float]] = {name: [] for name in TRIGGER_CASES}
        requests: dict[str, list[str]] = {}
        for _ in range(runs):
            # Interleaved, so that the load of a shared machine hits every case alike.
            times: dict[str, list[float]] = {name: [] for name in TRIGGER_CASES}
            for _ in range(views):
                for name, (path, sends) in TRIGGER_CASES.items():
                    elapsed, requests[name] = time_view(port, stub, path, sends, gap)
                    times[name].append(elapsed)
            run = {name: statistics.median(times[name]) for name in TRIGGER_CASES}
            for name in TRIGGER_CASES:
                medians[name].append(run[name])
                ratios[name].append(run[name] / run["triggers nothing"])
        for name in TRIGGER_CASES:
            per_view = len(requests[name])
            print(
                f"{name:<20} {statistics.median(medians[name]) * 1000:>13.2f}"
                f" {statistics.median(ratios[name]):>10.2f} {per_view:>9.0f}"
                f"  {sorted(set(requests[name]))}"
            )
        print(
            f"target: '3 events, defer' <= 1.2x 'triggers nothing', in 1 request"
            f"  (load average {os.getloadavg()[0]:.2f})"
        )
    finally:
        app_process.terminate()
        app_process.join(10)
        stub.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per case (median)")
    parser.add_argument("--seconds", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--views", type=int, default=20, help="requests per trigger-view run")
    parser.add_argument("--latency", type=float, default=0.03, help="stub Pusher latency, s")
    parser.add_argument("--gap", type=float, default=0.05, help="s between trigger views")
    parser.add_argument(
        "--only-triggers", action="store_true", help="run only the trigger-view benchmark"
    )
    args = parser.parse_args()
    if args.only_triggers:
        trigger_benchmark(args.runs, args.views, args.latency, args.gap)
        return
    clients = {"ours": ours().test_client(), "minimal": minimal().test_client()}
    header = f"{'case':<20} {'ours (us)':>10} {'minimal (us)':>13} {'ratio':>6}"
    print(f"{header}   (median of {args.runs} runs)")
    medians: dict[str, float] = {}
    for name, send in CASES.items():
        ratios, times = [], {"ours": [], "minimal": []}
        for _ in range(args.runs):
            # Alternate, so that drift on a shared machine hits both alike.
            run = {side: per_request(c, send, args.seconds) for side, c in clients.items()}
            for side, t in run.items():
                times[side].append(t)
            ratios.append(run["ours"] / run["minimal"])
        medians[name] = statistics.median(times["ours"])
        baseline = statistics.median(times["minimal"])
        ratio = statistics.median(ratios)
        print(f"{name:<20} {medians[name] * 1e6:>10.1f} {baseline * 1e6:>13.1f} {ratio:>6.2f}")
    batch_ratio = medians["batch of 100"] / (100 * medians["private auth"])
    print(f"\nbatch of 100 / (100 x private auth): {batch_ratio:.3f}  (target < 0.15)")
    trigger_benchmark(args.runs, args.views, args.latency, args.gap)


if __name__ == "__main__":
    main()
