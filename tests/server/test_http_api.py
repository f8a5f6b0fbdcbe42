"""The HTTP API (reference §4) through the official ``pusher`` library and raw
signed requests, error statuses included."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pusher
import pytest
import requests

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from .helpers import APP_ID
from .helpers import data_of
from .helpers import KEY
from .helpers import pusher_client
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import WS

Session = aiohttp.ClientSession


def signed(
    server: LocalServer,
    method: str,
    path: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    *,
    timestamp: float | None = None,
    secret: str = SECRET,
    key: str = KEY,
) -> requests.Response:
    """A request signed by hand as reference §4.3 describes."""
    query = {
        "auth_key": key,
        "auth_timestamp": str(int(time.time() if timestamp is None else timestamp)),
        "auth_version": "1.0",
        **(params or {}),
    }
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    canonical = "&".join(f"{k.lower()}={query[k]}" for k in sorted(query, key=str.lower))
    to_sign = f"{method}\n{path}\n{canonical}"
    query["auth_signature"] = hmac.new(secret.encode(), to_sign.encode(), "sha256").hexdigest()
    return requests.request(
        method,
        f"{server.url}{path}?{urlencode(query)}",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


@pytest.fixture
def subscribed(server: LocalServer) -> Iterator[None]:
    """Occupy a few channels while the test runs, from a background thread."""
    ready: concurrent.futures.Future[None] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()
    done = loop.create_future()

    async def hold() -> None:
        async with aiohttp.ClientSession() as session:
            ann = await WS.connect(session, server.ws_url)
            bob = await WS.connect(session, server.ws_url)
            await ann.subscribe("presence-room", {"user_id": "ann"})
            await bob.subscribe("presence-room", {"user_id": "bob"})
            await ann.expect("pusher_internal:member_added")
            await ann.subscribe("news")
            await bob.subscribe("news")
            await ann.subscribe("private-a")
            ready.set_result(None)
            await done

    def main() -> None:
        try:
            loop.run_until_complete(asyncio.wait_for(hold(), 60))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main)
    thread.start()
    try:
        ready.result(10)
        yield
    finally:
        loop.call_soon_threadsafe(done.set_result, None)
        thread.join(10)


def test_trigger_reaches_subscribers_except_socket_id(server: LocalServer, client: Any) -> None:
    async def scenario(session: Session) -> None:
        loop = asyncio.get_running_loop()
        a = await WS.connect(session, server.ws_url)
        b = await WS.connect(session, server.ws_url)
        await a.subscribe("news")
        await b.subscribe("news")
        result = await loop.run_in_executor(
            None, lambda: client.trigger(["news", "other"], "ev", {"k": "v"}, a.socket_id)
        )
        assert result == {}
        frame = await b.expect("ev")
        assert frame["channel"] == "news" and json.loads(frame["data"]) == {"k": "v"}
        await a.silent()
        await loop.run_in_executor(
            None,
            client.trigger_batch,
            [
                {"channel": "news", "name": "b1", "data": "1"},
                {"channel": "news", "name": "b2", "data": "2", "socket_id": b.socket_id},
            ],
        )
        assert (await a.expect("b1"))["data"] == "1"
        assert (await a.expect("b2"))["data"] == "2"
        assert (await b.expect("b1"))["data"] == "1"
        await b.silent()
        await a.close()
        await b.close()

    run_scenario(scenario)


def test_channels_info(server: LocalServer, client: Any, subscribed: None) -> None:
    assert client.channels_info() == {
        "channels": {"presence-room": {}, "news": {}, "private-a": {}}
    }
    assert client.channels_info("presence-", ["user_count"]) == {
        "channels": {"presence-room": {"user_count": 2}}
    }
    assert client.channels_info("new") == {"channels": {"news": {}}}
    with pytest.raises(pusher.errors.PusherBadRequest, match="user_count"):
        client.channels_info(attributes=["user_count"])


def test_channel_info(server: LocalServer, client: Any, subscribed: None) -> None:
    assert client.channel_info("news", ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 2,
    }
    assert client.channel_info("presence-room", ["user_count"]) == {
        "occupied": True,
        "user_count": 2,
    }
    assert client.channel_info("empty") == {"occupied": False}
    with pytest.raises(pusher.errors.PusherBadRequest, match="presence"):
        client.channel_info("news", ["user_count"])


def test_presence_channel_info_answers_both_counts(client: Any, subscribed: None) -> None:
    # Pusher's HTTP API clients document info=user_count,subscription_count as "all
    # attributes, supported for presence channels" (reference §4.2).
    info = client.channel_info("presence-room", ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 2}
    with pytest.raises(pusher.errors.PusherBadRequest, match="cache"):
        client.channel_info("news", ["cache"])


def test_channel_info_cache(server: LocalServer, client: Any) -> None:
    assert client.channel_info("cache-x", ["cache"]) == {"occupied": False, "cache": None}
    client.trigger("cache-x", "ev", "payload")
    info = client.channel_info("cache-x", ["cache"])
    assert info["cache"]["data"] == "payload"
    assert 0 < info["cache"]["ttl"] <= 1800


def test_users_info(server: LocalServer, client: Any, subscribed: None) -> None:
    users = client.users_info("presence-room")["users"]
    assert sorted(u["id"] for u in users) == ["ann", "bob"]
    with pytest.raises(pusher.errors.PusherBadRequest, match="presence"):
        client.users_info("news")


def test_terminate_user_connections_both_paths(server: LocalServer, client: Any) -> None:
    async def scenario(session: Session) -> None:
        loop = asyncio.get_running_loop()
        ann = await WS.connect(session, server.ws_url)
        await ann.signin({"id": "ann"})
        # pusher 3.3.4 posts to /users/ann/terminate_connections (reference §4.6).
        assert await loop.run_in_executor(None, client.terminate_user_connections, "ann") == {}
        error = await ann.expect("pusher:error")
        assert error["data"]["code"] == 4009
        again = await WS.connect(session, server.ws_url)
        await again.signin({"id": "ann"})
        body = b"{}"
        path = f"/apps/{APP_ID}/users/ann/terminate_connections"
        response = await loop.run_in_executor(None, signed, server, "POST", path, body)
        assert response.status_code == 200 and response.json() == {}
        assert (await again.expect("pusher:error"))["data"]["code"] == 4009

    run_scenario(scenario)


def test_trigger_info_attributes(server: LocalServer, subscribed: None) -> None:
    body = json.dumps(
        {
            "name": "ev",
            "data": "x",
            "channels": ["news", "presence-room"],
            "info": "user_count,subscription_count",
        }
    ).encode()
    response = signed(server, "POST", f"/apps/{APP_ID}/events", body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "channels": {
            "news": {"subscription_count": 2},
            "presence-room": {"user_count": 2, "subscription_count": 2},
        }
    }
    batch = {
        "batch": [
            {"channel": "news", "name": "a", "data": "1", "info": "subscription_count"},
            {"channel": "private-a", "name": "b", "data": "2"},
        ]
    }
    response = signed(server, "POST", f"/apps/{APP_ID}/batch_events", json.dumps(batch).encode())
    assert response.json() == {"batch": [{"subscription_count": 2}, {}]}


def test_bad_signature_is_401(server: LocalServer) -> None:
    with pytest.raises(pusher.errors.PusherBadAuth, match="Invalid signature"):
        pusher_client(server.port, secret="not-the-secret").trigger("news", "ev", "x")


def test_unknown_key_is_401(server: LocalServer) -> None:
    with pytest.raises(pusher.errors.PusherBadAuth, match="Unknown auth_key"):
        pusher_client(server.port, key="otherkey").channels_info()


def test_unknown_app_is_404(server: LocalServer) -> None:
    with pytest.raises(pusher.errors.PusherBadStatus, match="404"):
        pusher_client(server.port, app_id="999").channels_info()


@pytest.mark.parametrize("skew", [-601, 601])
def test_stale_timestamp_is_401(server: LocalServer, skew: int) -> None:
    response = signed(server, "GET", f"/apps/{APP_ID}/channels", timestamp=time.time() + skew)
    assert response.status_code == 401
    assert "Timestamp expired" in response.text


def test_timestamp_within_window_is_accepted(server: LocalServer) -> None:
    response = signed(server, "GET", f"/apps/{APP_ID}/channels", timestamp=time.time() - 590)
    assert response.status_code == 200, response.text


def test_body_md5_must_match_raw_body(server: LocalServer) -> None:
    body = b'{"name":"ev","channels":["news"],"data":"x"}'
    query = {"body_md5": hashlib.md5(b"something else").hexdigest()}
    response = signed(server, "POST", f"/apps/{APP_ID}/events", b"", params=query)
    assert response.status_code == 401
    # Same signed parameters, but the body differs from what body_md5 covers.
    ok = signed(server, "POST", f"/apps/{APP_ID}/events", body)
    assert ok.status_code == 200, ok.text


def test_query_is_signed_decoded(server: LocalServer) -> None:
    """Values are signed unescaped (reference §4.3): 'a b' not 'a%20b'."""
    response = signed(server, "GET", f"/apps/{APP_ID}/channels", params={"filter_by_prefix": "a b"})
    assert response.status_code == 200, response.text


def test_data_over_10kb_is_413(server: LocalServer, client: Any) -> None:
    client.trigger("news", "ev", "x" * 10240)
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        client.trigger("news", "ev", "x" * 10241)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"name": "ev", "data": "x", "channels": []}, "channels"),
        ({"name": "ev", "data": "x", "channels": [f"c{i}" for i in range(101)]}, "100"),
        ({"name": "ev", "data": {"not": "a string"}, "channels": ["a"]}, "data"),
        ({"data": "x", "channels": ["a"]}, "name"),
        ({"name": "ev", "data": "x", "channels": ["bad name!"]}, "channel"),
        ({"name": "ev", "data": "x", "channels": ["a"], "socket_id": "nope"}, "socket_id"),
        (
            {"name": "ev", "data": "x", "channels": ["private-encrypted-a", "b"]},
            "encrypted",
        ),
    ],
)
def test_invalid_events_are_400(server: LocalServer, payload: Any, message: str) -> None:
    response = signed(server, "POST", f"/apps/{APP_ID}/events", json.dumps(payload).encode())
    assert response.status_code == 400
    assert message in response.text


def test_batch_over_10_is_400(server: LocalServer, client: Any) -> None:
    batch = [{"channel": "a", "name": "ev", "data": str(i)} for i in range(11)]
    with pytest.raises(pusher.errors.PusherBadRequest, match="10"):
        client.trigger_batch(batch)


def test_send_to_user_reaches_only_that_user(server: LocalServer, client: Any) -> None:
    async def scenario(session: Session) -> None:
        loop = asyncio.get_running_loop()
        ann = await WS.connect(session, server.ws_url)
        bob = await WS.connect(session, server.ws_url)
        await ann.signin({"id": "ann"})
        await bob.signin({"id": "bob"})
        await loop.run_in_executor(None, client.send_to_user, "ann", "note", {"n": 1})
        frame = await ann.expect("note")
        assert data_of(frame) == {"n": 1}
        await bob.silent()

    run_scenario(scenario)


def test_two_apps_on_one_port() -> None:
    apps = [AppConfig("1", "key1", "secret1"), AppConfig("2", "key2", "secret2")]
    with LocalServer(apps) as server:
        one = pusher.Pusher("1", "key1", "secret1", host="127.0.0.1", port=server.port, ssl=False)
        two = pusher.Pusher("2", "key2", "secret2", host="127.0.0.1", port=server.port, ssl=False)
        assert one.channels_info() == two.channels_info() == {"channels": {}}
        cross = pusher.Pusher("1", "key2", "secret2", host="127.0.0.1", port=server.port, ssl=False)
        with pytest.raises(pusher.errors.PusherBadAuth):
            cross.channels_info()


def test_errors_are_never_200(server: LocalServer) -> None:
    assert requests.get(f"{server.url}/apps/{APP_ID}/channels", timeout=10).status_code == 401
    assert requests.get(f"{server.url}/nowhere", timeout=10).status_code == 404


def test_disabled_app_is_403() -> None:
    with LocalServer([AppConfig(APP_ID, KEY, SECRET, enabled=False)]) as server:
        with pytest.raises(pusher.errors.PusherForbidden, match="disabled"):
            pusher_client(server.port).trigger("news", "ev", "x")
        # Authentication still comes first.
        with pytest.raises(pusher.errors.PusherBadAuth):
            pusher_client(server.port, secret="wrong").trigger("news", "ev", "x")


def test_invalid_info_is_400_and_nothing_is_delivered(server: LocalServer) -> None:
    events = {"name": "bad", "data": "x", "channels": ["news"], "info": ["subscription_count"]}
    batch = {
        "batch": [
            {"channel": "news", "name": "bad", "data": "1"},
            {"channel": "news", "name": "bad", "data": "2", "info": 5},
        ]
    }

    async def scenario(session: Session) -> None:
        ann = await WS.connect(session, server.ws_url)
        await ann.subscribe("news")
        for path, payload in (("events", events), ("batch_events", batch)):
            body = json.dumps(payload).encode()
            response = await asyncio.to_thread(
                signed, server, "POST", f"/apps/{APP_ID}/{path}", body
            )
            assert response.status_code == 400, response.text
            assert "info" in response.text
        client = pusher_client(server.port)
        await asyncio.to_thread(client.trigger, "news", "good", "x")
        frame = await ann.expect("good")  # and no "bad" before it
        assert frame["channel"] == "news"
        await ann.close()

    run_scenario(scenario)
