"""PUSHER_LOCAL_SERVER (the in-process server for development) and the pytest fixtures."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask import render_template_string
from werkzeug.serving import make_server

from flask_pusher import local
from flask_pusher import Pusher
from flask_pusher.settings import LOCAL_DEFAULTS

aiohttp = pytest.importorskip("aiohttp")

from flask_pusher.server import AppConfig  # noqa: E402
from flask_pusher.server import LocalServer  # noqa: E402

from .server.helpers import APP_ID  # noqa: E402
from .server.helpers import KEY  # noqa: E402
from .server.helpers import SECRET  # noqa: E402
from .server.helpers import WS  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stop_local_servers() -> Iterator[None]:
    yield
    local.stop_all()


def test_switch_off_imports_nothing_of_the_server() -> None:
    code = """
import sys
from flask import Flask
from flask_pusher import Pusher
app = Flask("x")
app.config.update(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s")
pusher = Pusher(app)
app.test_client().post("/pusher/auth", data={"socket_id": "1.2", "channel_name": "private-a"})
with app.app_context():
    pusher.client
print(json.dumps([m for m in ("flask_pusher.server", "aiohttp") if m in sys.modules]))
"""
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_switch_on_points_the_client_and_templates_at_it(stop_local_servers: None) -> None:
    port = free_port()
    app = Flask(__name__)
    app.config.update(
        PUSHER_LOCAL_SERVER="true", PUSHER_LOCAL_SERVER_PORT=str(port), PUSHER_HOST="api.example"
    )
    pusher = Pusher(app)
    with app.test_request_context():
        settings = pusher.settings
        assert (settings.app_id, settings.key, settings.secret) == tuple(LOCAL_DEFAULTS.values())
        assert (settings.host, settings.port, settings.ssl) == ("127.0.0.1", port, False)
        opts = json.loads(render_template_string("{{ pusher_options() }}"))
        assert (opts["wsHost"], opts["wsPort"], opts["forceTLS"]) == ("127.0.0.1", port, False)
        assert local.running(port) is None  # not started by init_app or templates
        assert pusher.trigger("room", "e", {"n": 1}) == {}  # the client starts it
        assert local.running(port) is not None
        assert pusher.channels_info() == {"channels": {}}


def test_the_in_process_server_has_its_debug_console_and_prints_where(
    stop_local_servers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9: the development server's console is on, on loopback without a login."""
    port = free_port()
    app = Flask(__name__)
    app.config.update(PUSHER_LOCAL_SERVER=True, PUSHER_LOCAL_SERVER_PORT=port)
    pusher = Pusher(app)
    with app.app_context():
        url = local.console_url(pusher.settings)
        assert url == f"http://127.0.0.1:{port}/console"
        pusher.trigger("room", "e", {})  # starts the server
    assert f" * Pusher debug console: {url}" in capsys.readouterr().err
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert b"debug console" in response.read()
    off = Flask(__name__)
    off.config.update(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s")
    with off.app_context():
        assert local.console_url(Pusher(off).settings) is None


def test_switch_on_end_to_end_with_webhooks_back_to_the_app(stop_local_servers: None) -> None:
    ws_port = free_port()
    app = Flask(__name__)
    app.config.update(PUSHER_LOCAL_SERVER=True, PUSHER_LOCAL_SERVER_PORT=ws_port)
    pusher = Pusher(app)
    occupied = threading.Event()
    pusher.webhooks.on("channel_occupied")(lambda event: occupied.set())

    @app.get("/")
    def index() -> str:
        return render_template_string("{{ pusher_options() }}")

    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        received = asyncio.run(subscribe_and_receive(app, pusher, http.server_port, ws_port))
        assert occupied.wait(10), "the channel_occupied webhook did not reach the app"
    finally:
        http.shutdown()
    assert (received["event"], received["channel"]) == ("news", "room")
    assert json.loads(received["data"]) == {"n": 1}


async def subscribe_and_receive(app: Flask, pusher: Pusher, http_port: int, ws_port: int) -> Any:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{http_port}/") as r:
            options = json.loads(await r.text())
        assert options["wsPort"] == ws_port
        url = f"ws://127.0.0.1:{ws_port}/app/{LOCAL_DEFAULTS['key']}?protocol=7"
        async with session.ws_connect(url) as ws:
            hello = json.loads((await ws.receive(timeout=10)).data)
            assert hello["event"] == "pusher:connection_established"
            await ws.send_json({"event": "pusher:subscribe", "data": {"channel": "room"}})
            ok = json.loads((await ws.receive(timeout=10)).data)
            assert ok["event"] == "pusher_internal:subscription_succeeded"
            with app.app_context():
                await asyncio.to_thread(pusher.trigger, "room", "news", {"n": 1})
            while True:
                frame = json.loads((await ws.receive(timeout=10)).data)
                if frame["event"] == "news":
                    return frame


def test_the_pytest_fixtures(
    pusher_app: Flask, pusher_server: Any, pusher_config: dict[str, Any]
) -> None:
    assert pusher_config["PUSHER_PORT"] == pusher_server.port
    pusher = pusher_app.extensions["pusher"]
    with pusher_app.app_context():
        assert pusher.trigger("private-encrypted-x", "e", {"secret": 1}) == {}
        assert pusher.channel_info("room", ["subscription_count"])["occupied"] is False


SIBLING_WORKER = """
import json, sys
from flask import Flask
from flask_pusher import Pusher
app = Flask("worker")
app.config.update(PUSHER_APP_ID=sys.argv[2], PUSHER_KEY=sys.argv[3], PUSHER_SECRET=sys.argv[4],
                  PUSHER_LOCAL_SERVER=True, PUSHER_LOCAL_SERVER_PORT=int(sys.argv[1]))
pusher = Pusher(app)
with app.app_context():
    print(json.dumps(pusher.channels_info()))
"""


def test_a_sibling_worker_uses_the_running_server(stop_local_servers: None) -> None:
    """Under a pre-fork server (gunicorn -w 4) every worker but the first finds the
    port taken: it uses the server there when that server serves the app."""
    port = free_port()
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], port=port) as server:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session:
                ws = await WS.connect(session, server.ws_url)
                await ws.subscribe("news")
                worker = [sys.executable, "-c", SIBLING_WORKER, str(port), APP_ID, KEY, SECRET]
                out = await asyncio.to_thread(
                    subprocess.run, worker, capture_output=True, text=True, timeout=60
                )
                assert out.returncode == 0, out.stderr
                assert json.loads(out.stdout) == {"channels": {"news": {}}}

        asyncio.run(scenario())


def test_a_port_taken_by_a_stranger_is_a_clear_error(stop_local_servers: None) -> None:
    port = free_port()
    with LocalServer([AppConfig("other", "other-key", "other-secret")], port=port):
        app = Flask(__name__)
        app.config.update(
            PUSHER_APP_ID="1",
            PUSHER_KEY="k",
            PUSHER_SECRET="s",
            PUSHER_LOCAL_SERVER=True,
            PUSHER_LOCAL_SERVER_PORT=port,
        )
        pusher = Pusher(app)
        with app.app_context(), pytest.raises(RuntimeError, match="does not serve this app"):
            pusher.client  # noqa: B018


def test_the_in_process_server_takes_the_apps_limits(stop_local_servers: None) -> None:
    """PUSHER_SERVER_APP_LIMITS sets the per-app limits of the in-process
    server (issue 16): a quota of one connection closes the second with 4004
    (reference §5.12), over a real socket."""
    port = free_port()
    app = Flask(__name__)
    app.config.update(
        PUSHER_LOCAL_SERVER="true",
        PUSHER_LOCAL_SERVER_PORT=str(port),
        PUSHER_SERVER_APP_LIMITS='{"max_connections": 1, "allowed_origins": ["*"]}',
    )
    pusher = Pusher(app)
    with app.app_context():
        assert pusher.settings.server_app_limits == {
            "max_connections": 1,
            "allowed_origins": ("*",),
        }
        pusher.trigger("room", "e", {})  # starts the server
        key = pusher.settings.key

    async def scenario() -> list[Any]:
        async with aiohttp.ClientSession() as session:
            url = f"ws://127.0.0.1:{port}/app/{key}?protocol=7"
            first = await session.ws_connect(url)
            second = await session.ws_connect(url)
            frames = [json.loads((await ws.receive(5)).data) for ws in (first, second)]
            await first.close()
            await second.close()
            return frames

    established, refused = asyncio.run(scenario())
    assert established["event"] == "pusher:connection_established"
    assert refused["event"] == "pusher:error" and refused["data"]["code"] == 4004, refused


def test_an_unknown_app_limit_is_refused_at_init_app() -> None:
    app = Flask(__name__)
    app.config.update(PUSHER_LOCAL_SERVER="true", PUSHER_SERVER_APP_LIMITS={"max_conections": 1})
    with pytest.raises(ValueError, match=r"PUSHER_SERVER_APP_LIMITS.*max_conections"):
        Pusher(app)
