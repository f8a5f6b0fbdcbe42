"""No amplification over real sockets (issue 16, item 3): subscription counts
coalesced per channel (reference §5.11: counts on each change, throttled above
100 subscribers), a connection's subscription changes paced, presence flaps
paid by the flapper (reference §5.6)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig

from .helpers import APP_ID
from .helpers import channel_auth
from .helpers import KEY
from .helpers import Receiver
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import WS

COUNT = "pusher_internal:subscription_count"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    options: dict[str, Any] = getattr(request, "param", {})
    started = LocalServer([AppConfig(APP_ID, KEY, SECRET, **options)]).start()
    yield started
    started.stop()


async def frames_until_quiet(client: WS, quiet: float) -> list[tuple[float, dict[str, Any]]]:
    """Every frame ``client`` receives until none came for ``quiet`` seconds."""
    seen: list[tuple[float, dict[str, Any]]] = []
    while True:
        try:
            msg = await client.ws.receive(quiet)
        except asyncio.TimeoutError:
            return seen
        seen.append((time.monotonic(), json.loads(msg.data)))


def test_a_passive_subscriber_under_churn_gets_few_count_frames(server: LocalServer) -> None:
    base = server.url

    async def scenario(session: aiohttp.ClientSession) -> None:
        victim = await WS.connect(session, base)
        await victim.subscribe("room")
        assert (await victim.recv())["event"] == COUNT  # its own count: 1
        attacker = await WS.connect(session, base)
        started = time.monotonic()
        for _ in range(300):  # 600 changes: within a connection's budget
            await attacker.send("pusher:subscribe", {"channel": "room"})
            await attacker.send("pusher:unsubscribe", {"channel": "room"})
        await attacker.send("pusher:ping")
        while (await attacker.recv())["event"] != "pusher:pong":
            pass  # every change is made once the pong comes
        last_change = time.monotonic()
        seen = await frames_until_quiet(victim, 2.5)
        counts = [(at, frame) for at, frame in seen if frame["event"] == COUNT]
        # Today's code: 600 frames. Coalesced: at most two per heartbeat.
        elapsed = counts[-1][0] - started if counts else 0.0
        assert len(counts) <= 2 * (elapsed + 1) + 1, (len(counts), elapsed)
        # The latest count (the victim alone) arrived within about a second.
        assert json.loads(counts[-1][1]["data"]) == {"subscription_count": 1}
        assert counts[-1][0] - last_change <= 1.5

    run_scenario(scenario)


@pytest.mark.parametrize(
    "server",
    [{"max_subscription_changes_per_second": 10, "max_subscriptions_per_connection": 20}],
    indirect=True,
)
def test_subscription_churn_is_paced_with_4304(server: LocalServer) -> None:
    base = server.url

    async def scenario(session: aiohttp.ClientSession) -> None:
        attacker = await WS.connect(session, base)
        for _ in range(40):
            await attacker.send("pusher:subscribe", {"channel": "room"})
            await attacker.send("pusher:unsubscribe", {"channel": "room"})
        seen = [frame for _, frame in await frames_until_quiet(attacker, 0.5)]
        succeeded = [f for f in seen if f["event"] == "pusher_internal:subscription_succeeded"]
        refused = [f for f in seen if f["event"] == "pusher:subscription_error"]
        errors = [f for f in seen if f["event"] == "pusher:error"]
        # A budget of 20 changes, refilled at 10 a second: about 10 pairs pass.
        assert 8 <= len(succeeded) <= 14, len(succeeded)
        assert len(refused) == 40 - len(succeeded)
        assert {f["data"]["status"] for f in refused} == {429}
        assert {f["data"]["code"] for f in errors} == {4304}

    run_scenario(scenario)


def test_presence_flaps_cost_the_flapper_not_the_members(server: LocalServer) -> None:
    base = server.url
    channel = "presence-room"

    async def scenario(session: aiohttp.ClientSession) -> None:
        member = await WS.connect(session, base)
        await member.subscribe(channel, {"user_id": "ann"})
        flapper = await WS.connect(session, base)
        auth = channel_auth(flapper.socket_id, channel, {"user_id": "mallory"})
        auth.pop("shared_secret", None)
        for _ in range(500):  # reusing its own auth, as in the review
            await flapper.send("pusher:subscribe", {"channel": channel, **auth})
            await flapper.send("pusher:unsubscribe", {"channel": channel})
        seen = [frame for _, frame in await frames_until_quiet(member, 1.0)]
        told = [f for f in seen if f["event"].startswith("pusher_internal:member_")]
        # Today's code: 1,000 frames. Paid for: a budget of 1,000 at 11 a join
        # or leave (90 changes), plus what refills meanwhile.
        assert 2 <= len(told) <= 150, len(told)
        flapped = [frame for _, frame in await frames_until_quiet(flapper, 0.5)]
        assert any(f["event"] == "pusher:error" and f["data"]["code"] == 4304 for f in flapped)

    run_scenario(scenario)


def test_a_member_added_webhook_survives_40000_churn_subscriptions() -> None:
    """Issue 16: anonymous churn over many public channels fills the webhook
    queue with ``channel_occupied`` events (reference §3.2); the app's own
    ``member_added`` is kept and the drops are counted by type."""
    receiver = Receiver()
    receiver.failures = 10**6  # the app is down while the flood comes
    hook = WebhookConfig(receiver.url)
    server = LocalServer(
        [AppConfig(APP_ID, KEY, SECRET, webhooks=[hook])], webhook_backoff=0.2, webhook_delay=0.1
    ).start()
    base = server.url

    async def churn(session: aiohttp.ClientSession, start: int) -> list[WS]:
        clients = [await WS.connect(session, base) for _ in range(20)]
        for n, client in enumerate(clients):
            for i in range(1000):
                await client.send("pusher:subscribe", {"channel": f"c{start + n}-{i}"})
        for client in clients:
            await client.send("pusher:ping")
            while (await client.recv(skip_counts=True))["event"] != "pusher:pong":
                pass
        return clients

    async def scenario(session: aiohttp.ClientSession) -> None:
        await churn(session, 0)  # 20,000 subscriptions
        member = await WS.connect(session, base)
        await member.subscribe("presence-room", {"user_id": "ann"})
        await churn(session, 100)  # 20,000 more
        receiver.failures = 0  # the app is back

    try:
        run_scenario(scenario)
        found = False
        deadline = time.monotonic() + 60
        while not found and time.monotonic() < deadline:
            events = receiver.events(timeout=30)
            found = any(e["name"] == "member_added" and e["user_id"] == "ann" for e in events)
        assert found, "member_added never arrived"
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        dropped = {
            line.split('type="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("pusher_webhooks_dropped_full_total{")
        }
        assert dropped.get("channel_occupied", 0) > 1000, dropped
        assert "member_added" not in dropped, dropped
    finally:
        server.stop()
        receiver.close()
