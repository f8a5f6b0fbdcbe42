"""Outgoing webhooks (reference §3), received by a local HTTP server and
verified with the official library's ``validate_webhook``."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig

from .helpers import APP_ID
from .helpers import KEY
from .helpers import Receiver
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import WS

Session = aiohttp.ClientSession


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def serve(receiver: Receiver, types: set[str] | None = None, **options: Any) -> LocalServer:
    hook = WebhookConfig(receiver.url, frozenset(types) if types else None)
    app = AppConfig(APP_ID, KEY, SECRET, webhooks=[hook])
    options.setdefault("webhook_delay", 0.2)
    options.setdefault("webhook_backoff", 0.05)
    return LocalServer([app], **options)


def test_occupied_then_vacated_after_the_delay(receiver: Receiver) -> None:
    with serve(receiver, {"channel_occupied", "channel_vacated"}) as server:

        async def scenario(session: Session) -> None:
            ws = await WS.connect(session, server.ws_url)
            await ws.subscribe("news")
            assert receiver.events() == [{"name": "channel_occupied", "channel": "news"}]
            left = time.monotonic()
            await ws.close()
            assert receiver.events() == [{"name": "channel_vacated", "channel": "news"}]
            assert time.monotonic() - left >= 0.2

        run_scenario(scenario)


def test_vacate_cancelled_by_resubscribe_within_delay(receiver: Receiver) -> None:
    types = {"channel_occupied", "channel_vacated", "member_added", "member_removed"}
    with serve(receiver, types, webhook_delay=2.0) as server:

        async def scenario(session: Session) -> None:
            first = await WS.connect(session, server.ws_url)
            await first.subscribe("presence-x", {"user_id": "u"})
            assert sorted(e["name"] for e in receiver.events()) == [
                "channel_occupied",
                "member_added",
            ]
            await first.close()  # a page reload: the same user comes back
            again = await WS.connect(session, server.ws_url)
            await again.subscribe("presence-x", {"user_id": "u"})
            await again.close()
            # Only the final departure is reported, once.
            assert sorted(e["name"] for e in receiver.events()) == [
                "channel_vacated",
                "member_removed",
            ]
            assert receiver.requests.empty()

        run_scenario(scenario)


def test_presence_client_event_cache_miss_and_count_events(receiver: Receiver) -> None:
    with serve(receiver) as server:

        async def scenario(session: Session) -> None:
            ann = await WS.connect(session, server.ws_url)
            bob = await WS.connect(session, server.ws_url)
            await ann.subscribe("presence-chat", {"user_id": "ann"})
            assert receiver.events() == [
                {"name": "channel_occupied", "channel": "presence-chat"},
                {"name": "member_added", "channel": "presence-chat", "user_id": "ann"},
            ]
            await bob.subscribe("presence-chat", {"user_id": "bob"})
            assert receiver.events() == [
                {"name": "member_added", "channel": "presence-chat", "user_id": "bob"}
            ]
            await ann.send("client-hi", {"x": 1}, channel="presence-chat")
            assert receiver.events() == [
                {
                    "name": "client_event",
                    "channel": "presence-chat",
                    "event": "client-hi",
                    "data": '{"x": 1}',
                    "socket_id": ann.socket_id,
                    "user_id": "ann",
                }
            ]
            await bob.expect("client-hi")
            await bob.subscribe("cache-y")
            assert receiver.events() == [
                {"name": "channel_occupied", "channel": "cache-y"},
                {"name": "cache_miss", "channel": "cache-y"},
                {"name": "subscription_count", "channel": "cache-y", "subscription_count": 1},
            ]
            await ann.close()
            await bob.close()

        run_scenario(scenario)


def test_failed_delivery_is_retried_with_the_same_body(receiver: Receiver) -> None:
    receiver.failures = 2
    with serve(receiver, {"channel_occupied"}) as server:

        async def scenario(session: Session) -> None:
            ws = await WS.connect(session, server.ws_url)
            await ws.subscribe("news")
            bodies = [receiver.next()[1] for _ in range(2)]  # two 500s
            assert receiver.events() == [{"name": "channel_occupied", "channel": "news"}]
            assert bodies[0] == bodies[1]
            await ws.close()

        run_scenario(scenario)


def test_retries_stop_after_retry_for(receiver: Receiver) -> None:
    receiver.failures = 1000
    with serve(receiver, {"channel_occupied"}, webhook_retry_for=1.0) as server:

        async def scenario(session: Session) -> None:
            ws = await WS.connect(session, server.ws_url)
            await ws.subscribe("news")
            seen = 0
            while True:
                try:
                    receiver.next(timeout=2.0)
                except queue.Empty:
                    break
                seen += 1
            # Tries at 0, 0.05, 0.15, 0.35 and 0.75 s fit in 1 s; waiting 0.8 s more
            # would not. A loaded machine may fit fewer.
            assert 2 <= seen <= 5
            await ws.close()

        run_scenario(scenario)


def test_stop_flushes_held_webhooks(receiver: Receiver) -> None:
    server = serve(receiver, {"channel_vacated"}, webhook_delay=60).start()

    async def scenario(session: Session) -> None:
        ws = await WS.connect(session, server.ws_url)
        await ws.subscribe("news")
        await ws.close()

    run_scenario(scenario)
    server.stop()
    assert receiver.events(timeout=1) == [{"name": "channel_vacated", "channel": "news"}]


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown webhook event types"):
        WebhookConfig("http://x", frozenset({"channel_exploded"}))
