"""Per-app limits on one node, over real sockets (issue 16, item 4): the
connection quota (close 4004, reference §5.12), allowed origins (4009, as
Reverb, reference pusher-servers §4), subscriptions per connection, the HTTP
API's rates (429, as soketi, reference pusher-servers §3) and authorized
connections (4009 after the timeout, reference §5.12 "More notes")."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pusher
import pytest
import requests

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from .helpers import APP_ID
from .helpers import KEY
from .helpers import pusher_client
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import TIMEOUT
from .helpers import WS


def serve(**options: Any) -> LocalServer:
    return LocalServer([AppConfig(APP_ID, KEY, SECRET, **options)], tick_interval=0.2).start()


@pytest.fixture
def limited(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    server = serve(**request.param)
    yield server
    server.stop()


async def open_raw(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None
) -> tuple[aiohttp.ClientWebSocketResponse[bool], dict[str, Any]]:
    """A raw protocol-7 WebSocket and its first frame (reference §5.3)."""
    ws = await session.ws_connect(f"{base}/app/{KEY}?protocol=7", headers=headers)
    first = json.loads((await ws.receive(TIMEOUT)).data)
    return ws, first


async def close_code(ws: aiohttp.ClientWebSocketResponse[bool]) -> int | None:
    """The close code the server sends, skipping any frames before it."""
    while True:
        msg = await ws.receive(TIMEOUT)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code


def metric(server: LocalServer, limit: str) -> float:
    for line in requests.get(f"{server.url}/metrics", timeout=TIMEOUT).text.splitlines():
        if line.startswith("pusher_limit_refusals_total{") and f'limit="{limit}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("limited", [{"max_connections": 3}], indirect=True)
def test_connection_quota_closes_the_next_one_with_4004(limited: LocalServer) -> None:
    base = limited.url

    async def scenario(session: aiohttp.ClientSession) -> None:
        # Ten at once: exactly three are admitted.
        opened = await asyncio.gather(*(open_raw(session, base) for _ in range(10)))
        admitted = [ws for ws, first in opened if first["event"] == "pusher:connection_established"]
        refused = [(ws, first) for ws, first in opened if first["event"] == "pusher:error"]
        assert len(admitted) == 3 and len(refused) == 7
        for ws, first in refused:
            assert first["data"]["code"] == 4004, first
            assert await close_code(ws) == 4004
        # A slot given back is taken again.
        await admitted[0].close()
        for _ in range(100):
            ws, first = await open_raw(session, base)
            if first["event"] == "pusher:connection_established":
                break
            await ws.close()
            await asyncio.sleep(0.05)  # polling: the server sees the close shortly
        assert first["event"] == "pusher:connection_established"

    run_scenario(scenario)
    assert metric(limited, "max_connections") >= 7


@pytest.mark.parametrize("limited", [{"allowed_origins": ["*.example.com"]}], indirect=True)
def test_an_origin_not_allowed_is_closed_with_4009(limited: LocalServer) -> None:
    base = limited.url

    async def scenario(session: aiohttp.ClientSession) -> None:
        ws, first = await open_raw(session, base, {"Origin": "https://app.example.com"})
        assert first["event"] == "pusher:connection_established"
        for headers in ({"Origin": "https://evil.test"}, {"Origin": "null"}, None):
            ws, first = await open_raw(session, base, headers)
            assert first["event"] == "pusher:error" and first["data"]["code"] == 4009, first
            assert await close_code(ws) == 4009

    run_scenario(scenario)
    assert metric(limited, "allowed_origins") == 3


@pytest.mark.parametrize("limited", [{"max_subscriptions_per_connection": 2}], indirect=True)
def test_subscriptions_per_connection_are_capped(limited: LocalServer) -> None:
    base = limited.url

    async def scenario(session: aiohttp.ClientSession) -> None:
        client = await WS.connect(session, base)
        await client.subscribe("a")
        await client.subscribe("b")
        refusal = await client.subscribe("c", expect="pusher:subscription_error")
        assert refusal is not None
        assert refusal["data"]["status"] == 403
        error = await client.expect("pusher:error")
        assert error["data"]["code"] == 4303
        await client.subscribe("a")  # already subscribed: confirmed again
        await client.send("pusher:unsubscribe", {"channel": "a"})
        await client.subscribe("c")  # a slot given back

    run_scenario(scenario)
    assert metric(limited, "max_subscriptions_per_connection") == 1


def burst(calls: int, call: Any) -> list[int]:
    """Statuses of ``calls`` calls made within one second (retried until they fit)."""
    for _ in range(5):
        started = time.monotonic()
        statuses = []
        for _ in range(calls):
            try:
                call()
                statuses.append(200)
            except pusher.errors.PusherBadStatus as exc:
                statuses.append(int(str(exc).split(":")[0]))
        if time.monotonic() - started < 1.0:
            return statuses
        time.sleep(1.0)  # the window of the next try is a fresh one
    raise AssertionError(f"{calls} calls never fitted in one second")


@pytest.mark.parametrize("limited", [{"max_backend_events_per_second": 2}], indirect=True)
def test_events_per_second_are_answered_429(limited: LocalServer) -> None:
    client = pusher_client(limited.port)
    batch = [{"channel": "a", "name": "e", "data": "{}"}] * 3
    with pytest.raises(pusher.errors.PusherBadStatus, match=r"^429: Too many events"):
        client.trigger_batch(batch)  # three events never fit two per second
    statuses = burst(6, lambda: client.trigger("a", "e", {}))
    # Six calls within one second span at most two windows of two events.
    assert 2 <= statuses.count(200) <= 4 and statuses.count(429) >= 2, statuses
    assert metric(limited, "max_backend_events_per_second") >= 3


@pytest.mark.parametrize("limited", [{"max_read_requests_per_second": 1}], indirect=True)
def test_read_requests_per_second_are_answered_429(limited: LocalServer) -> None:
    client = pusher_client(limited.port)
    statuses = burst(4, lambda: client.channels_info())
    assert 1 <= statuses.count(200) <= 2 and statuses.count(429) >= 2, statuses
    # Triggers are not reads.
    client.trigger("a", "e", {})


@pytest.mark.parametrize(
    "limited", [{"authorized_connections": True, "user_authentication_timeout": 1}], indirect=True
)
def test_a_connection_that_never_signs_in_is_closed_with_4009(limited: LocalServer) -> None:
    base = limited.url

    async def scenario(session: aiohttp.ClientSession) -> None:
        silent = await WS.connect(session, base)
        public = await WS.connect(session, base)
        await public.subscribe("news")  # a public channel does not authorize
        member = await WS.connect(session, base)
        await member.signin({"id": "ann"})
        private = await WS.connect(session, base)
        await private.subscribe("private-a")
        started = time.monotonic()
        assert await close_code(silent.ws) == 4009
        assert await close_code(public.ws) == 4009
        assert time.monotonic() - started >= 0.5
        for client in (member, private):  # still served
            await client.send("pusher:ping")
            await client.expect("pusher:pong")

    run_scenario(scenario)
    assert metric(limited, "authorized_connections") == 2


def test_limits_are_checked_at_setup() -> None:
    for options in (
        {"max_connections": 0},
        {"max_connections": True},
        {"max_subscriptions_per_connection": 0},
        {"max_backend_events_per_second": -1},
        {"allowed_origins": "example.com"},
        {"user_authentication_timeout": 0},
    ):
        with pytest.raises(ValueError, match="AppConfig"):
            AppConfig(APP_ID, KEY, SECRET, **options)


async def _admitted(
    session: aiohttp.ClientSession, base: str, headers: list[dict[str, str] | None]
) -> list[tuple[aiohttp.ClientWebSocketResponse[bool], dict[str, Any]]]:
    """Open one raw connection per entry of ``headers`` at once."""
    return list(await asyncio.gather(*(open_raw(session, base, h) for h in headers)))


@pytest.mark.parametrize("limited", [{"max_connections_per_address": 2}], indirect=True)
def test_connections_per_address_close_the_next_one_with_4004(limited: LocalServer) -> None:
    """Issue 16 item 4's cap per client address (reference §5.12's 4004
    family): a forwarded header from a peer that is no trusted proxy
    changes nothing."""
    base = limited.url

    async def scenario(session: aiohttp.ClientSession) -> None:
        forged = [{"X-Forwarded-For": f"10.0.0.{i}"} for i in range(8)]
        opened = await _admitted(session, base, [*forged])
        admitted = [ws for ws, first in opened if first["event"] == "pusher:connection_established"]
        refused = [(ws, first) for ws, first in opened if first["event"] == "pusher:error"]
        assert len(admitted) == 2 and len(refused) == 6
        for ws, first in refused:
            assert first["data"] == {
                "code": 4004,
                "message": "Too many connections from this address",
            }, first
            assert await close_code(ws) == 4004
        # A slot given back is taken again, and only one.
        await admitted[0].close()
        for _ in range(100):
            ws, first = await open_raw(session, base)
            if first["event"] == "pusher:connection_established":
                break
            await ws.close()
            await asyncio.sleep(0.05)  # polling: the server sees the close shortly
        assert first["event"] == "pusher:connection_established"
        ws, first = await open_raw(session, base)
        assert first["event"] == "pusher:error" and first["data"]["code"] == 4004, first

    run_scenario(scenario)
    assert metric(limited, "max_connections_per_address") >= 7
    assert metric(limited, "max_connections") == 0


def test_connections_per_address_count_a_trusted_proxys_clients_apart() -> None:
    """Behind a trusted proxy (--trusted-proxy), the client is the last
    ``X-Forwarded-For`` entry: each client has its own cap."""
    server = LocalServer(
        [AppConfig(APP_ID, KEY, SECRET, max_connections_per_address=1)],
        trusted_proxies=("127.0.0.1",),
    ).start()
    base = server.url

    async def scenario(session: aiohttp.ClientSession) -> None:
        clients = ["198.51.100.7", "1.2.3.4, 198.51.100.8", "198.51.100.9"]
        opened = await _admitted(session, base, [{"X-Forwarded-For": c} for c in clients])
        assert all(first["event"] == "pusher:connection_established" for _, first in opened)
        # The proxy's own address is one more client (no header).
        proxy, first = await open_raw(session, base)
        assert first["event"] == "pusher:connection_established"
        # The forged first entry is not the client: the proxy's last one is.
        for header in ("198.51.100.7", "203.0.113.1, 198.51.100.8", None):
            _, first = await open_raw(
                session, base, {"X-Forwarded-For": header} if header else None
            )
            assert first["event"] == "pusher:error", (header, first)
            assert first["data"]["code"] == 4004
        assert not proxy.closed and not any(ws.closed for ws, _ in opened)

    try:
        run_scenario(scenario)
    finally:
        server.stop()


@pytest.mark.parametrize("rate", [1, 7, 100])
def test_the_subscription_change_budget_is_a_token_bucket(rate: int) -> None:
    """``limits.spend`` keeps the bucket as one time (``full_at``): it holds
    ``max(rate, max_subscriptions_per_connection)`` changes, refills at
    ``rate`` a second, and unsubscribes (never refused) may take it down to
    minus its size; checked against a bucket of two numbers."""
    from flask_pusher.server import limits
    from flask_pusher.server.state import AppState
    from flask_pusher.server.state import Connection

    config = AppConfig(
        APP_ID,
        KEY,
        SECRET,
        max_subscription_changes_per_second=rate,
        max_subscriptions_per_connection=20,
    )
    conn = Connection("1.1", AppState(config), 0.0)
    size = max(rate, 20)
    tokens, at = float(size), 1000.0
    steps = [(1000.0, 1, True)] * (size + 3) + [(1000.5, 1, True)] * 3
    steps += [(1000.5, 5, False)] * (2 * size // 5 + 2) + [(1001.5, 2, True), (1004.0, 1, True)]
    steps += [(1004.0 + i / 10, 3, i % 3 != 0) for i in range(40)] + [(2000.0, 1, True)]
    for now, cost, refusable in steps:
        tokens = min(size, tokens + (now - at) * rate)
        at = now
        expected = not refusable or tokens >= cost
        if expected:
            tokens = max(-size, tokens - cost)
        assert limits.spend(conn, cost, now, refusable) is expected, (now, cost, tokens)
    assert conn.full_at is not None
