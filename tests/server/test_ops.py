"""Operating the server (issue 9): Prometheus metrics scraped and parsed with
``prometheus_client.parser``, ``/health`` and ``/ready``, request ids of HTTP
API calls, and the debug console's endpoints (its page is tested in a browser
in tests/browser/test_console.py). Real server, real sockets, the official
``pusher`` client."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from collections.abc import Callable
from typing import Any

import aiohttp
import pusher
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.server import WebhookConfig
from flask_pusher.server.cli import main
from flask_pusher.server.console import COOKIE
from flask_pusher.server.console import is_loopback
from flask_pusher.server.console import Watcher

from .helpers import APP_ID
from .helpers import KEY
from .helpers import pusher_client
from .helpers import Receiver
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import TIMEOUT
from .helpers import WS

Session = aiohttp.ClientSession
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: Session, url: str) -> Samples:
    """Every sample of ``url``/metrics, by name and labels (``node`` left out)."""
    async with session.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "node")
            samples[sample.name, labels] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[f"pusher_{name}", frozenset({"app_id": APP_ID, **labels}.items())]


async def metric_is(session: Session, url: str, name: str, expected: float) -> bool:
    return value(await scrape(session, url), name) == expected


async def until(check: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    """Wait for ``check()`` (maybe a coroutine) to be true, bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_every_metric_moves_as_clients_connect_subscribe_receive_and_leave() -> None:
    """reference §5 (protocol), §4 (HTTP API): soketi's ten metrics and ours."""
    receiver = Receiver()
    receiver.failures = 1  # the first webhook request fails, then it is retried
    app = AppConfig(
        APP_ID,
        KEY,
        SECRET,
        max_client_events_per_second=1,
        webhooks=[WebhookConfig(receiver.url, frozenset({"channel_occupied"}))],
    )
    with LocalServer([app], tick_interval=0.05, webhook_backoff=0.05) as server:

        async def scenario(session: Session) -> None:
            url = server.url
            zero = await scrape(session, url)
            assert value(zero, "connected") == 0
            assert value(zero, "new_connections_total") == 0
            assert value(zero, "occupied_channels") == 0
            alice = await WS.connect(session, server.ws_url)
            bob = await WS.connect(session, server.ws_url)
            await alice.subscribe("presence-room", {"user_id": "alice"})
            await bob.subscribe("presence-room", {"user_id": "bob"})
            await alice.expect("pusher_internal:member_added")
            await bob.subscribe("private-bad", signed=False, expect="pusher:subscription_error")
            one = await scrape(session, url)
            assert value(one, "connected") == 2
            assert value(one, "new_connections_total") == 2
            assert value(one, "occupied_channels") == 1
            assert value(one, "presence_members") == 2
            assert value(one, "subscription_errors_total", code="401") == 1
            assert value(one, "ws_messages_received_total") == 3
            assert value(one, "socket_received_bytes") > 100
            # Greetings, confirmations, member_added, the error: one frame each.
            assert value(one, "ws_messages_sent_total") == 6
            sent_bytes = value(one, "socket_transmitted_bytes")
            # An API message to both.
            client = pusher_client(server.port)
            await asyncio.to_thread(client.trigger, "presence-room", "news", {"n": 1})
            await alice.expect("news")
            await bob.expect("news")
            two = await scrape(session, url)
            assert value(two, "ws_messages_sent_total") == 8
            frame = len(json.dumps({"event": "news", "channel": "presence-room"}))
            assert value(two, "socket_transmitted_bytes") - sent_bytes > 2 * frame
            assert value(two, "http_calls_received_total") == 1
            assert value(two, "http_received_bytes") > 40
            assert value(two, "http_transmitted_bytes") == 2  # {}
            assert value(two, "http_responses_total", status="200") == 1
            # A refused API call counts by its status.
            wrong = pusher_client(server.port, secret="not-the-secret")
            with pytest.raises(pusher.errors.PusherBadAuth):
                await asyncio.to_thread(wrong.trigger, "presence-room", "x", {})
            # Client events over the rate limit (1 per second) are refused with 4301.
            await alice.send("client-typing", {}, channel="presence-room")
            await bob.expect("client-typing")
            await alice.send("client-typing", {}, channel="presence-room")
            refused = await alice.expect("pusher:error")
            assert refused["data"]["code"] == 4301
            three = await scrape(session, url)
            assert value(three, "http_responses_total", status="401") == 1
            assert value(three, "http_calls_received_total") == 2
            assert value(three, "client_events_refused_total") == 1
            # The webhook: one failed request, then the retry delivered it.
            receiver.events()
            receiver.events()
            await until(lambda: metric_is(session, url, "webhooks_sent_total", 1))
            four = await scrape(session, url)
            assert value(four, "webhooks_failed_total") == 1
            assert value(four, "webhooks_retrying") == 0
            assert value(four, "webhooks_queued") == 0
            assert value(four, "webhooks_dropped_total") == 0
            lag = four["pusher_event_loop_lag_seconds", frozenset()]
            assert 0 <= lag < 1.0
            await alice.close()
            await bob.close()
            await until(lambda: metric_is(session, url, "connected", 0))
            five = await scrape(session, url)
            assert value(five, "new_disconnections_total") == 2
            assert value(five, "occupied_channels") == 0
            assert value(five, "presence_members") == 0

        run_scenario(scenario)
    receiver.close()


def test_metric_types_names_and_labels_carry_soketis_over() -> None:
    """soketi's names after the prefix; byte counters keep names without _total."""
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], metrics_prefix="soketi_", node="n1") as s:

        async def scenario(session: Session) -> None:
            async with session.get(s.url + "/metrics") as response:
                text = await response.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            assert families["soketi_connected"].type == "gauge"
            assert families["soketi_new_connections"].type == "counter"
            assert families["soketi_socket_received_bytes"].type == "unknown"
            sample = families["soketi_connected"].samples[0]
            assert sample.labels == {"app_id": APP_ID, "node": "n1"}
            for name in (
                "connected",
                "new_connections_total",
                "new_disconnections_total",
                "socket_received_bytes",
                "socket_transmitted_bytes",
                "ws_messages_received_total",
                "ws_messages_sent_total",
                "http_received_bytes",
                "http_transmitted_bytes",
                "http_calls_received_total",
            ):
                assert f"\nsoketi_{name}{{" in text, name

        run_scenario(scenario)


def test_servers_in_one_process_count_apart_and_metrics_can_be_off() -> None:
    app = AppConfig(APP_ID, KEY, SECRET)
    with (
        LocalServer([app]) as one,
        LocalServer([app]) as two,
        LocalServer([app], metrics=False) as off,
    ):

        async def scenario(session: Session) -> None:
            await (await WS.connect(session, one.ws_url)).close()
            assert value(await scrape(session, one.url), "new_connections_total") == 1
            assert value(await scrape(session, two.url), "new_connections_total") == 0
            async with session.get(off.url + "/metrics") as response:
                assert response.status == 404
            async with session.get(off.url + "/health") as response:
                assert response.status == 200

        run_scenario(scenario)


def test_metrics_port_serves_metrics_and_probes_apart() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], metrics_port=port) as server:

        async def scenario(session: Session) -> None:
            ops = f"http://127.0.0.1:{port}"
            assert value(await scrape(session, ops), "connected") == 0
            async with session.get(ops + "/ready") as response:
                assert response.status == 200
            async with session.get(server.url + "/metrics") as response:
                assert response.status == 404  # not on the public port

        run_scenario(scenario)


def test_a_bad_metrics_prefix_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        main, ["--app-id", "1", "--key", "k", "--secret", "s", "--metrics-prefix", "9-x"]
    )
    assert result.exit_code == 2
    assert "metrics prefix" in result.output
    with pytest.raises(ValueError, match="metrics prefix"):
        LocalServer([AppConfig(APP_ID, KEY, SECRET)], metrics_prefix="a b").start()


# -- health ---------------------------------------------------------------------


def test_health_and_ready_while_serving_and_shutting_down() -> None:
    server = LocalServer([AppConfig(APP_ID, KEY, SECRET)], shutdown_delay=1.0).start()
    stopper = threading.Thread(target=server.stop)

    async def scenario(session: Session) -> None:
        for path, body in (("/health", {"status": "ok"}), ("/ready", {"ready": True})):
            async with session.get(server.url + path) as response:
                assert response.status == 200
                assert (await response.json()).items() >= body.items()
        stopper.start()

        async def refusing() -> bool:
            async with session.get(server.url + "/ready") as response:
                if response.status == 503:
                    assert await response.json() == {"ready": False, "reason": "shutting down"}
                    return True
                return False

        await until(refusing)
        async with session.get(server.url + "/health") as response:
            assert response.status == 200  # still alive, just not ready

    run_scenario(scenario)
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()


# -- request ids ----------------------------------------------------------------


def test_http_api_calls_get_a_request_id_in_the_answer_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "flask_pusher.server.http")
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)]) as server:
        client = pusher_client(server.port)

        async def scenario(session: Session) -> None:
            async with session.get(f"{server.url}/apps/{APP_ID}/channels") as response:
                assert response.status == 401
                generated = response.headers["X-Request-Id"]
            assert len(generated) == 32
            headers = {"X-Request-Id": "nginx-7f3a"}
            async with session.get(f"{server.url}/apps/nope/channels", headers=headers) as r:
                assert r.status == 404
                assert r.headers["X-Request-Id"] == "nginx-7f3a"
            headers = {"X-Request-Id": "bad id\twith spaces"}
            async with session.get(f"{server.url}/apps/nope/channels", headers=headers) as r:
                assert r.headers["X-Request-Id"] != headers["X-Request-Id"]
            await asyncio.to_thread(client.trigger, "c", "e", {})
            records = [r for r in caplog.records if hasattr(r, "request_id")]
            assert generated in {r.request_id for r in records}
            lines = [r.getMessage() for r in records]
            assert any("-> 401" in line and generated in line for line in lines)
            assert any("-> 404" in line and "nginx-7f3a" in line for line in lines)
            assert any(line.startswith("POST /apps/3/events -> 200") for line in lines)

        run_scenario(scenario)


# -- the console's endpoints ----------------------------------------------------


class Stream:
    """A console's server-sent event stream, read as a browser would."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def events(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        kind = "message"
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                yield kind, json.loads(line[6:])
                kind = "message"

    async def until(self, wanted: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The events up to and including the first that ``wanted`` accepts."""
        seen: list[dict[str, Any]] = []

        async def read() -> None:
            async for kind, event in self.events():
                if kind == "message":
                    seen.append(event)
                    if wanted(event):
                        return

        await asyncio.wait_for(read(), TIMEOUT)
        return seen


def test_console_streams_what_happens_and_creates_events() -> None:
    """reference §5: connection, subscribe, presence, client event, API message,
    refusal, disconnection; the event creator takes the HTTP API's path."""
    app = AppConfig(APP_ID, KEY, SECRET, enable_client_events=True)
    with LocalServer([app], console=True, node="test-node") as server:
        assert server.console_url == f"{server.url}/console"

        async def scenario(session: Session) -> None:
            async with session.get(server.url + "/console") as page:
                assert page.status == 200
                assert "<title>Pusher server debug console" in await page.text()
            response = await session.get(server.url + "/console/events")
            stream = Stream(response)
            alice = await WS.connect(
                session, server.ws_url, query="protocol=7&client=js&version=8.4.0"
            )
            await alice.subscribe("presence-room", {"user_id": "alice", "user_info": {"n": 1}})
            bob = await WS.connect(session, server.ws_url)
            await bob.subscribe("presence-room", {"user_id": "bob"})
            await alice.expect("pusher_internal:member_added")
            await bob.send("client-typing", {"x": 1}, channel="presence-room")
            await alice.expect("client-typing")
            client = pusher_client(server.port)
            await asyncio.to_thread(
                client.trigger, "presence-room", "news", {"n": 2}, alice.socket_id
            )
            await bob.expect("news")  # alice's socket was excluded
            await bob.subscribe("private-x", signed=False, expect="pusher:subscription_error")
            await bob.close()
            seen = await stream.until(lambda e: e["type"] == "disconnection")
            kinds = [e["type"] for e in seen]
            assert kinds == [
                "connection",
                "subscribed",
                "occupied",
                "member_added",
                "connection",
                "subscribed",
                "member_added",
                "client_event",
                "api_message",
                "subscription_refused",
                "disconnection",
            ], kinds
            by_kind = {e["type"]: e for e in reversed(seen)}  # the first of each kind
            assert by_kind["connection"]["socket_id"] == alice.socket_id
            assert by_kind["connection"]["protocol"] == "7"
            assert by_kind["connection"]["client"] == "js"
            assert "aiohttp" in by_kind["connection"]["user_agent"]
            assert all(e["node"] == "test-node" and e["app"] == APP_ID for e in seen)
            event = by_kind["client_event"]
            assert (event["socket_id"], event["user_id"]) == (bob.socket_id, "bob")
            assert json.loads(event["data"]) == {"x": 1}
            message = by_kind["api_message"]
            assert message["channels"] == ["presence-room"] and message["event"] == "news"
            assert message["socket_id"] == alice.socket_id
            assert message["size"] == len('{"n": 2}')
            assert by_kind["subscription_refused"]["status"] == 401
            assert "Missing auth" in by_kind["subscription_refused"]["reason"]
            assert by_kind["disconnection"]["code"] == 1000
            assert by_kind["disconnection"]["channels"] == ["presence-room"]
            # The state view.
            async with session.get(server.url + "/console/state") as state_response:
                state = await state_response.json()
            (app_state,) = state["apps"]
            assert app_state["connection_count"] == 1
            assert app_state["channels"] == [
                {"name": "presence-room", "subscription_count": 1, "user_count": 1}
            ]
            assert app_state["presence"] == {
                "presence-room": [{"user_id": "alice", "user_info": {"n": 1}}]
            }
            # The event creator, through Core.trigger.
            body = {"app_id": APP_ID, "channel": "presence-room", "event": "hi", "data": "[1]"}
            async with session.post(server.url + "/console/trigger", json=body) as created:
                assert created.status == 200, await created.text()
            await alice.expect("pusher_internal:member_removed")  # bob left
            frame = await alice.expect("hi")
            assert frame["data"] == "[1]"
            seen = await stream.until(lambda e: e["type"] == "api_message")
            assert seen[-1]["source"] == "console"
            for bad, status in (
                ({**body, "data": "{not json"}, 400),
                ({**body, "channel": "bad channel"}, 400),
                ({**body, "app_id": "nope"}, 404),
            ):
                async with session.post(server.url + "/console/trigger", json=bad) as refused:
                    assert refused.status == status
                    assert "error" in await refused.json()
            # Neither a form post nor another origin may use the event creator.
            text = json.dumps(body)
            async with session.post(server.url + "/console/trigger", data=text) as refused:
                assert refused.status == 415
            headers = {"Origin": "http://evil.example"}
            async with session.post(
                server.url + "/console/trigger", json=body, headers=headers
            ) as refused:
                assert refused.status == 403
            response.close()
            await alice.close()

        run_scenario(scenario)


def test_the_console_costs_nothing_unwatched_and_is_off_by_default() -> None:
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)]) as plain:

        async def off(session: Session) -> None:
            async with session.get(plain.url + "/console") as response:
                assert response.status == 404

        run_scenario(off)
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], console=True) as server:
        running = server.server
        assert running is not None and running.console is not None
        console = running.console
        (state,) = running.core.apps_by_id.values()

        async def scenario(session: Session) -> None:
            assert not console.watching and not state.watched
            response = await session.get(server.url + "/console/events")
            await until(lambda: console.watching and state.watched)
            response.close()
            await until(lambda: not console.watching and not state.watched)

        run_scenario(scenario)


def test_a_slow_watcher_drops_and_counts_instead_of_growing() -> None:
    watcher = Watcher(None, size=3)
    for n in range(10):
        watcher.push(APP_ID, str(n))
    assert list(watcher.queue) == ["0", "1", "2"]
    assert watcher.dropped == 7
    only_other = Watcher(frozenset({"other"}), size=3)
    only_other.push(APP_ID, "x")
    assert not only_other.queue and only_other.dropped == 0


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert not is_loopback("") and not is_loopback("example.com")


def test_off_loopback_the_console_asks_for_an_app_secret_and_shows_only_that_app() -> None:
    apps = [AppConfig(APP_ID, KEY, SECRET), AppConfig("other", "other-key", "other-secret")]
    with LocalServer(apps, host="0.0.0.0", console=True) as server:
        base = f"http://127.0.0.1:{server.port}"

        async def scenario(session: Session) -> None:
            async with session.get(base + "/console") as page:
                assert page.status == 401
                text = await page.text()
                assert 'name="secret"' in text and SECRET not in text
            for path in ("/console/events", "/console/state"):
                async with session.get(base + path) as refused:
                    assert refused.status == 403
                    assert "error" in await refused.json()
            async with session.post(base + "/console/login", data={"secret": "nope"}) as wrong:
                assert wrong.status == 401
                assert '<p id="failed">' in await wrong.text()
            async with session.post(
                base + "/console/login", data={"secret": SECRET}, allow_redirects=False
            ) as right:
                assert right.status == 303
                cookie = right.cookies[COOKIE]
            assert SECRET not in cookie.value
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            jar = {COOKIE: cookie.value}
            async with session.get(base + "/console/state", cookies=jar) as state:
                assert [a["app_id"] for a in (await state.json())["apps"]] == [APP_ID]
            body = {"app_id": "other", "channel": "c", "event": "e", "data": "{}"}
            async with session.post(base + "/console/trigger", json=body, cookies=jar) as r:
                assert r.status == 404  # the other app is not this session's
            forged = cookie.value.replace(APP_ID + ":", "other:", 1)
            async with session.get(base + "/console/state", cookies={COOKIE: forged}) as r:
                assert r.status == 403

        async def main() -> None:
            # No cookie jar: each request carries only the cookies it names.
            jar = aiohttp.DummyCookieJar()
            async with aiohttp.ClientSession(cookie_jar=jar) as session:
                await asyncio.wait_for(scenario(session), 60)

        asyncio.run(main())


def test_console_shows_webhook_attempts_with_status_latency_and_retry() -> None:
    receiver = Receiver()
    receiver.failures = 1
    hook = WebhookConfig(receiver.url, frozenset({"channel_occupied"}))
    app = AppConfig(APP_ID, KEY, SECRET, webhooks=[hook])
    with LocalServer([app], console=True, webhook_backoff=0.05) as server:

        async def scenario(session: Session) -> None:
            stream = Stream(await session.get(server.url + "/console/events"))
            ws = await WS.connect(session, server.ws_url)
            await ws.subscribe("room")
            seen = await stream.until(lambda e: e["type"] == "webhook" and e["status"] == 200)
            attempts = [e for e in seen if e["type"] == "webhook"]
            assert [(a["status"], a["retry"]) for a in attempts] == [(500, 0), (200, 1)]
            assert all(a["url"] == receiver.url and a["latency"] >= 0 for a in attempts)
            assert attempts[0]["events"] == ["channel_occupied"]
            await ws.close()
            stream.response.close()  # aiohttp 3.10 leaves an unreleased stream open

        run_scenario(scenario)
    receiver.close()


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        # A multipart body aiohttp cannot parse: was a 500 with a traceback.
        ("/console/login", {"Content-Type": "multipart/form-data; boundary=zz"}, b"{}", 400),
        # A gzip body that is not gzip: was a 500 with a traceback.
        (
            "/console/trigger",
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            b"not gzip",
            400,
        ),
    ],
)
def test_broken_console_bodies_are_a_400_without_traceback(
    caplog: pytest.LogCaptureFixture, path: str, headers: dict[str, str], body: bytes, status: int
) -> None:
    caplog.set_level(logging.DEBUG)
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], console=True) as server:

        async def scenario(session: Session) -> None:
            async with session.post(
                server.url + path, data=body, headers=headers, skip_auto_headers=["Content-Type"]
            ) as response:
                assert response.status == status, await response.text()

        run_scenario(scenario)
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "forwarded", [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}]
)
def test_on_loopback_a_proxied_request_must_log_in_too(forwarded: dict[str, str]) -> None:
    """Behind a proxy on the same machine every request comes from 127.0.0.1: a
    forwarded request may come from anywhere, so it needs the secret too."""
    with LocalServer([AppConfig(APP_ID, KEY, SECRET)], console=True) as server:

        async def scenario(session: Session) -> None:
            async with session.get(server.url + "/console/state") as direct:
                assert direct.status == 200
            for path, status in (("/console", 401), ("/console/state", 403)):
                async with session.get(server.url + path, headers=forwarded) as proxied:
                    assert proxied.status == status
            body = {"app_id": APP_ID, "channel": "c", "event": "e", "data": "{}"}
            async with session.post(
                server.url + "/console/trigger", json=body, headers=forwarded
            ) as trigger:
                assert trigger.status == 403

        run_scenario(scenario)
