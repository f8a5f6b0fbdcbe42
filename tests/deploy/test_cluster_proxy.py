"""The scaled-out topology of docs/scaling.rst with real parts: Debian's nginx
terminating TLS with ``examples/deploy/nginx.conf`` (its Pusher upstream given
one ``server`` line per node), two server nodes joined through a real Redis,
WebSocket clients through ``wss://`` landing on both nodes, and the official
library triggering through the proxy (issue 8; reference §4.2, §5.5, §5.8)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import requests

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from ..server.redis_server import RedisServer
from . import CABundleBackend
from .test_tls_proxy import free_port
from .test_tls_proxy import make_certificate
from .test_tls_proxy import render_site
from .test_tls_proxy import start_nginx
from .test_tls_proxy import stop_process
from .test_tls_proxy import TIMEOUT
from .test_tls_proxy import wait_for

APP_ID, KEY, SECRET = "5", "cluster-key", "cluster-secret"


def _ready(node: LocalServer) -> bool:
    try:
        return requests.get(f"{node.url}/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


async def _frame(ws: Any, event: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=TIMEOUT)
        if frame["event"] == event:
            return frame


def test_a_cluster_behind_nginx_with_tls(
    tmp_path: Path, redis_factory: Callable[[], RedisServer]
) -> None:
    with contextlib.ExitStack() as stopper:
        _run(tmp_path, redis_factory, stopper)


def _run(
    tmp_path: Path, redis_factory: Callable[[], RedisServer], stopper: contextlib.ExitStack
) -> None:
    ca, cert, key = make_certificate(tmp_path)
    ports = {name: free_port() for name in ("http", "app", "ws")}
    redis_url = redis_factory().url
    app = AppConfig(APP_ID, KEY, SECRET)
    nodes = []
    for i in range(2):
        node = LocalServer([app], redis_url=redis_url, redis_prefix="proxy", node=f"n{i}")
        nodes.append(node.start())
        stopper.callback(node.stop)
        wait_for(functools.partial(_ready, node), f"node {i} ready")

    site = render_site(ports, {"app": free_port(), "ws": nodes[0].port}, cert, key)
    # One server line per node in the Pusher upstream, as docs/scaling.rst shows.
    first = f"server 127.0.0.1:{nodes[0].port};"
    assert site.count(first) == 1
    site = site.replace(first, f"{first}\n    server 127.0.0.1:{nodes[1].port};")
    nginx = start_nginx(tmp_path, site, ports)
    stopper.callback(stop_process, nginx)

    api = pusher.Pusher(
        APP_ID,
        KEY,
        SECRET,
        host="127.0.0.1",
        port=ports["ws"],
        ssl=True,
        backend=CABundleBackend,
        ca_bundle=str(ca),
    )
    context = ssl.create_default_context(cafile=str(ca))
    url = f"wss://127.0.0.1:{ports['ws']}/app/{KEY}?protocol=7&client=js&version=8.4.0"

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            clients = []
            for _ in range(4):
                ws = await session.ws_connect(url, ssl=context)
                hello = await ws.receive_json(timeout=TIMEOUT)
                socket_id = json.loads(hello["data"])["socket_id"]
                await ws.send_str(
                    json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}})
                )
                await _frame(ws, "pusher_internal:subscription_succeeded")
                clients.append((ws, socket_id))
            # nginx spread them over both nodes.
            held = [len(_app(node).connections) for node in nodes]
            assert sorted(held) == [2, 2], held
            await asyncio.to_thread(api.trigger, "news", "hello", {"via": "nginx"})
            for ws, _ in clients:
                assert json.loads((await _frame(ws, "hello"))["data"]) == {"via": "nginx"}
            # Presence across the two nodes, read back through the proxy.
            (a, a_id), (b, b_id) = clients[0], clients[1]
            for ws, socket_id, user in ((a, a_id, "ann"), (b, b_id, "bob")):
                auth = api.authenticate("presence-room", socket_id, {"user_id": user})
                data = {"channel": "presence-room", **auth}
                await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": data}))
                frame = await _frame(ws, "pusher_internal:subscription_succeeded")
            assert sorted(json.loads(frame["data"])["presence"]["ids"]) == ["ann", "bob"]
            added = await _frame(a, "pusher_internal:member_added")
            assert json.loads(added["data"])["user_id"] == "bob"
            users = await asyncio.to_thread(api.users_info, "presence-room")
            assert sorted(u["id"] for u in users["users"]) == ["ann", "bob"]
            for ws, _ in clients:
                await ws.close()

    asyncio.run(scenario())


def _app(node: LocalServer) -> Any:
    server = node.server
    assert server is not None
    return server.core.apps_by_id[APP_ID]
