"""Per-request time of the extension's routes against minimal hand-written views.

For each case the script times our route and a minimal Flask view that does the same
work with the official ``pusher`` library, both through Flask's test client in this
process, and prints the per-request medians of several runs and their ratio.

Targets (issue 2): ratio <= 1.2 for single requests; a batch of 100 channels in less
than 0.15x the time of 100 single private-channel requests.

    python benchmarks/endpoints.py [--runs 7] [--seconds 0.3]

Bounded: each measurement runs for about ``--seconds`` (at least 20 requests).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import pusher as pusher_http
from flask import abort
from flask import Flask
from flask import jsonify
from flask import request
from flask.testing import FlaskClient
from pusher.signature import sign

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per case (median)")
    parser.add_argument("--seconds", type=float, default=0.3, help="seconds per measurement")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
