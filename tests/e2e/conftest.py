"""End-to-end fixtures: the local server, a Flask app using the extension's
own auth routes (served by werkzeug in a thread), and a runner for the
pusher-js scenarios in ``scenarios.js``."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask import request
from werkzeug.serving import make_server

from flask_pusher import Pusher
from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig
from flask_pusher.webhooks import EVENT_NAMES

from ..needs import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).with_name("scenarios.js")
APP_ID = "4242"
KEY = "e2e-key"
SECRET = "e2e-secret"
MASTER_KEY = "bm90LWEtcmVhbC1rZXktYnV0LTMyLWJ5dGVzLWxvbmc="  # 32 bytes, base64
NODE_TIMEOUT = 60

Scenario = Callable[[str], list[dict[str, Any]]]


class LateApp:
    """A WSGI app whose real app is set after the server has a port."""

    def __init__(self) -> None:
        self.app: Flask | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


class Stack:
    """The running pieces of one end-to-end test."""

    def __init__(self) -> None:
        self.wsgi = LateApp()
        self.http = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.flask_url = f"http://127.0.0.1:{self.http.server_port}"
        self.server = self.start_server()
        self.webhooks: queue.Queue[dict[str, Any]] = queue.Queue()
        self.auth_requests: list[str] = []
        self.wsgi.app = self.make_flask_app()
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def start_server(self) -> LocalServer:
        """The Pusher server the Flask app triggers on (tests/cluster starts several)."""
        hook = WebhookConfig(f"{self.flask_url}/pusher/events")
        app = AppConfig(APP_ID, KEY, SECRET, webhooks=[hook])
        return LocalServer([app], webhook_delay=0.1).start()

    def make_flask_app(self) -> Flask:
        app = Flask(__name__)
        app.config.update(
            PUSHER_APP_ID=APP_ID,
            PUSHER_KEY=KEY,
            PUSHER_SECRET=SECRET,
            PUSHER_HOST="127.0.0.1",
            PUSHER_PORT=self.server.port,
            PUSHER_SSL=False,
            PUSHER_ENCRYPTION_MASTER_KEY_BASE64=MASTER_KEY,
        )
        pusher = Pusher(app)

        @app.before_request
        def count_auth() -> None:
            if request.path == "/pusher/auth":
                self.auth_requests.append(request.get_data(as_text=True))

        @pusher.auth
        def may_subscribe(channel_name: str, socket_id: str) -> bool:
            return "forbidden" not in channel_name

        @pusher.channel_data
        def member(channel_name: str, socket_id: str) -> dict[str, Any]:
            user = request.form.get("user") or socket_id
            return {"user_id": user, "user_info": {"name": user.title()}}

        @pusher.user_data
        def user(socket_id: str) -> dict[str, Any] | None:
            user_id = request.form.get("user")
            if not user_id:
                return None
            data: dict[str, Any] = {"id": user_id}
            if request.form.get("watchlist"):
                data["watchlist"] = request.form["watchlist"].split(",")
            return data

        @pusher.channel("private-orders.{order_id:int}")
        def order(order_id: int) -> bool:
            return order_id != 13

        @pusher.channel("presence-team.{team:any(red, blue)}")
        def team(team: str) -> dict[str, Any]:
            return {"user_id": request.form.get("user") or "anon", "user_info": {"team": team}}

        for name in sorted(EVENT_NAMES):
            pusher.webhooks.on(name)(self.webhooks.put)

        @app.post("/test/trigger")
        def trigger() -> dict[str, Any]:
            body = request.get_json()
            pusher.trigger(body["channel"], body["event"], body["data"], body.get("socket_id"))
            return {}

        @app.post("/test/say")
        def say() -> dict[str, Any]:
            body = request.get_json()
            pusher.trigger(body["channel"], body["event"], body["data"], to_others=True)
            return {"x_socket_id": request.headers.get("X-Socket-ID")}

        @app.route("/test/header", methods=["GET", "POST"])
        def header() -> dict[str, Any]:
            return {"x_socket_id": request.headers.get("X-Socket-ID")}

        @app.post("/test/send_to_user")
        def send_to_user() -> dict[str, Any]:
            body = request.get_json()
            pusher.send_to_user(body["user_id"], body["event"], body["data"])
            return {}

        return app

    def run(self, scenario: str, **options: Any) -> list[dict[str, Any]]:
        """Run one scenario in Node; return its observations (all but ``done``).

        ``options`` are added to the scenario's config (``cfg`` in scenarios.js).
        """
        config = {"key": KEY, "wsPort": self.server.port, "flask": self.flask_url, **options}
        proc = subprocess.run(
            ["node", str(SCENARIOS), scenario, json.dumps(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            check=False,
        )
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert proc.returncode == 0, f"{scenario}: {lines}\n{proc.stderr}"
        assert lines and lines[-1] == {"done": True}, lines
        return lines[:-1]

    def close(self) -> None:
        self.server.stop()
        self.http.shutdown()
        self.http.server_close()


def _node_ready() -> bool:
    return shutil.which("node") is not None and (ROOT / "node_modules" / "pusher-js").is_dir()


@pytest.fixture
def stack() -> Iterator[Stack]:
    if not _node_ready():
        unavailable("needs node and `npm ci` (pusher-js in node_modules).")
    running = Stack()
    try:
        yield running
    finally:
        running.close()
