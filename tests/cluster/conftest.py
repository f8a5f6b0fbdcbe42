"""Cluster fixtures: a real ``redis-server``, 2 or 3 server nodes joined
through it (each in its own thread, on its own port), the e2e Flask app for
auth, a webhook receiver that verifies with the official library, and
pusher-js 8.6 clients in one Node process driven from the test."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest
import requests
from flask import Flask
from flask import request

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig

from ..e2e.conftest import _node_ready
from ..e2e.conftest import APP_ID
from ..e2e.conftest import KEY
from ..e2e.conftest import MASTER_KEY
from ..e2e.conftest import ROOT
from ..e2e.conftest import SECRET
from ..e2e.conftest import Stack
from ..needs import unavailable
from ..server.redis_server import RedisServer

CLIENTS = Path(__file__).with_name("clients.js")
#: Seconds any one condition may take before the test fails.
TIMEOUT = 10.0

Event = dict[str, Any]


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Cluster(Stack):
    """The e2e stack with ``count`` nodes instead of one server.

    :attr:`server` is node A (the Flask app's ``PUSHER_PORT``); :attr:`nodes`
    are all of them. Webhooks go to ``/cluster/webhooks`` of the Flask app,
    which keeps those the official library validates in :attr:`hooks`.
    """

    def __init__(
        self, redis_url: str, count: int, webhook_delay: float, **app_options: Any
    ) -> None:
        self.redis_url = redis_url
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"
        self.count = count
        self.webhook_delay = webhook_delay
        self.app_options = app_options
        self.nodes: list[LocalServer] = []
        self.hooks: list[Event] = []
        self.invalid_hooks: list[str] = []
        self._hooks_lock = threading.Lock()
        self._clients: list[Clients] = []
        super().__init__()

    def start_server(self) -> LocalServer:
        hook = WebhookConfig(f"{self.flask_url}/cluster/webhooks")
        app = AppConfig(APP_ID, KEY, SECRET, webhooks=[hook], **self.app_options)
        try:
            for i in range(self.count):
                started = LocalServer(
                    [app],
                    redis_url=self.redis_url,
                    redis_prefix=self.prefix,
                    webhook_delay=self.webhook_delay,
                    node=f"node-{'ABC'[i]}",
                )
                self.nodes.append(started.start())
            for node in self.nodes:
                wait_until(partial(_ready, node), f"GET {node.url}/ready to answer 200")
        except BaseException:
            for node in self.nodes:
                node.stop()
            self.http.server_close()
            raise
        return self.nodes[0]

    def make_flask_app(self) -> Flask:
        app = super().make_flask_app()
        verifier = pusher.Pusher(APP_ID, KEY, SECRET)

        @app.post("/cluster/webhooks")
        def receive() -> tuple[str, int]:
            key = request.headers.get("X-Pusher-Key", "")
            signature = request.headers.get("X-Pusher-Signature", "")
            body = verifier.validate_webhook(key, signature, request.get_data())
            with self._hooks_lock:
                if body is None:
                    self.invalid_hooks.append(request.get_data(as_text=True))
                    return "invalid", 401
                self.hooks.extend(body["events"])
            return "", 200

        return app

    def api(self, node: int) -> pusher.Pusher:
        """The official library pointed at node ``node`` (0 is A)."""
        return pusher.Pusher(
            APP_ID,
            KEY,
            SECRET,
            host="127.0.0.1",
            port=self.nodes[node].port,
            ssl=False,
            encryption_master_key_base64=MASTER_KEY,
        )

    def clients(self) -> Clients:
        """A Node process for pusher-js clients (closed with the cluster)."""
        started = Clients(self.flask_url, [n.port for n in self.nodes])
        self._clients.append(started)
        return started

    def received(self, name: str | None = None, channel: str | None = None) -> list[Event]:
        """The webhook events received so far (optionally one name/channel)."""
        with self._hooks_lock:
            assert not self.invalid_hooks, f"webhooks failing validation: {self.invalid_hooks}"
            return [
                e
                for e in self.hooks
                if (name is None or e["name"] == name)
                and (channel is None or e.get("channel") == channel)
            ]

    def wait_webhook(self, name: str, channel: str, count: int = 1) -> list[Event]:
        """Wait until ``count`` webhooks ``name`` of ``channel`` arrived; return them."""
        wait_until(
            lambda: len(self.received(name, channel)) >= count,
            f"{count} {name} webhook(s) for {channel} (got {self.received()})",
        )
        return self.received(name, channel)

    def close(self) -> None:
        for started in self._clients:
            started.close()
        for node in self.nodes[1:]:
            node.stop()
        super().close()


def _ready(node: LocalServer) -> bool:
    try:
        return requests.get(f"{node.url}/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


class Clients:
    """pusher-js clients in one Node process (tests/cluster/clients.js).

    :meth:`call` runs one command and returns its reply; what the clients
    see is kept in :attr:`seen`, read with :meth:`events` and :meth:`wait`.
    """

    def __init__(self, flask_url: str, ports: list[int]) -> None:
        self.ports = ports
        config = json.dumps({"key": KEY, "flask": flask_url})
        self.proc = subprocess.Popen(
            ["node", str(CLIENTS), config],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.seen: list[Event] = []
        self._replies: dict[int, Event] = {}
        self._ids = 0
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            with self._changed:
                if "reply" in message:
                    self._replies[message.pop("reply")] = message
                else:
                    self.seen.append(message)
                self._changed.notify_all()

    def call(self, op: str, timeout: float = TIMEOUT, **args: Any) -> Event:
        """Run command ``op`` (see clients.js) and return its reply."""
        assert self.proc.stdin is not None
        with self._changed:
            self._ids += 1
            ident = self._ids
        self.proc.stdin.write(json.dumps({"id": ident, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        with self._changed:
            if not self._changed.wait_for(lambda: ident in self._replies, timeout):
                raise AssertionError(f"{op} {args}: no reply within {timeout} s")
            reply = self._replies.pop(ident)
        assert "error" not in reply, f"{op} {args}: {reply['error']}"
        return reply

    def connect(self, name: str, node: int, user: str = "", **args: Any) -> str:
        """Connect client ``name`` to node ``node`` (0 is A); return its socket_id."""
        reply = self.call("connect", client=name, port=self.ports[node], user=user, **args)
        return str(reply["socket_id"])

    def subscribe(self, name: str, channel: str) -> Event:
        """Subscribe and wait for the outcome: ``{"ok": bool, "members"?, "refusal"?}``."""
        return self.call("subscribe", client=name, channel=channel)

    def events(self, client: str | None = None, kind: str = "channel", **match: Any) -> list[Event]:
        """What clients saw: ``kind`` lines of ``client`` whose keys equal ``match``."""
        with self._changed:
            return [
                e
                for e in self.seen
                if e["kind"] == kind
                and (client is None or e["client"] == client)
                and all(e.get(k) == v for k, v in match.items())
            ]

    def wait(
        self, client: str | None = None, kind: str = "channel", count: int = 1, **match: Any
    ) -> list[Event]:
        """Wait until :meth:`events` has ``count`` matches; return them all."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: len(self.events(client, kind, **match)) >= count, TIMEOUT
            )
        if not found:
            seen = self.events(client, kind)
            raise AssertionError(f"{client} never saw {count} x {kind} {match}; saw {seen}")
        return self.events(client, kind, **match)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        errors = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.returncode == 0, errors


async def raw_connect(session: aiohttp.ClientSession, port: int, key: str = KEY) -> tuple[Any, str]:
    """A raw protocol-7 WebSocket on ``port`` (reference §5.1, §5.3) and its socket_id."""
    ws = await session.ws_connect(f"ws://127.0.0.1:{port}/app/{key}?protocol=7")
    hello = await ws.receive_json(timeout=TIMEOUT)
    return ws, json.loads(hello["data"])["socket_id"]


@pytest.fixture(scope="session")
def redis_url(redis_factory: Callable[[], RedisServer]) -> str:
    """A real redis-server for the whole session (each cluster has a key
    prefix of its own)."""
    return redis_factory().url


MakeCluster = Callable[..., Cluster]


@pytest.fixture
def make_cluster(redis_url: str) -> Iterator[MakeCluster]:
    """``make_cluster(count=2, webhook_delay=0.2, **AppConfig options)``:
    a started cluster with a Redis prefix of its own, closed after the test."""
    if not _node_ready():
        unavailable("needs node and `npm ci` (pusher-js in node_modules).")
    started: list[Cluster] = []

    def make(count: int = 2, webhook_delay: float = 0.2, **app_options: Any) -> Cluster:
        cluster = Cluster(redis_url, count, webhook_delay, **app_options)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.close()
