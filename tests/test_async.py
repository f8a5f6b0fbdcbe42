"""The ``*_async`` twins of the HTTP API methods, against the real local server
(reference §4.2), in plain asyncio and in Flask's ``async def`` views."""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import Iterator
from typing import Any

import pusher as pusher_http
import pytest
from flask import Flask

from flask_pusher import Pusher
from flask_pusher.server import LocalServer
from flask_pusher.testing import record_events

from .listener import Listener

ASYNC_TWINS = [
    "trigger",
    "trigger_batch",
    "send_to_user",
    "channels_info",
    "channel_info",
    "users_info",
    "terminate_user_connections",
]


@pytest.fixture
def pusher(pusher_app: Flask) -> Pusher:
    ext: Pusher = pusher_app.extensions["pusher"]
    return ext


@pytest.fixture
def listener(pusher_server: LocalServer) -> Iterator[Listener]:
    with Listener(pusher_server, ["news", "presence-room"], user_id="ann") as running:
        yield running


def run(app: Flask, coroutine: Any) -> Any:
    async def main() -> Any:
        with app.app_context():
            return await asyncio.wait_for(coroutine, 10)

    return asyncio.run(main())


@pytest.mark.parametrize("name", ASYNC_TWINS)
def test_every_http_api_method_has_an_awaitable_twin(pusher: Pusher, name: str) -> None:
    sync, twin = getattr(pusher, name), getattr(pusher, f"{name}_async")
    assert inspect.iscoroutinefunction(twin)
    sync_params = list(inspect.signature(sync).parameters)
    twin_params = list(inspect.signature(twin).parameters)
    # defer, after_commit and outbox: the sync methods' ways of sending later.
    later = ("defer", "after_commit", "outbox")
    assert twin_params == [p for p in sync_params if p not in later]


def test_trigger_and_batch_reach_a_subscriber(
    pusher_app: Flask, pusher: Pusher, listener: Listener
) -> None:
    async def scenario() -> list[Any]:
        return [
            await pusher.trigger_async("news", "one", {"n": 1}),
            await pusher.trigger_batch_async(
                [{"channel": "news", "name": "two", "data": {"n": 2}}]
            ),
        ]

    assert run(pusher_app, scenario()) == [{}, {}]
    assert listener.take(2) == [("news", "one", {"n": 1}), ("news", "two", {"n": 2})]


def test_trigger_async_leaves_out_a_socket_id(
    pusher_app: Flask, pusher: Pusher, pusher_server: LocalServer
) -> None:
    with Listener(pusher_server, ["news"]) as a, Listener(pusher_server, ["news"]) as b:

        async def scenario() -> None:
            await pusher.trigger_async("news", "not-a", 1, socket_id=a.socket_id)
            await pusher.trigger_async("news", "all", 2)

        run(pusher_app, scenario())
        assert b.take(2) == [("news", "not-a", 1), ("news", "all", 2)]
        assert a.take(1) == [("news", "all", 2)]


def test_channel_queries(pusher_app: Flask, pusher: Pusher, listener: Listener) -> None:
    async def scenario() -> list[Any]:
        return list(
            await asyncio.gather(
                pusher.channels_info_async(prefix_filter="presence-", attributes=["user_count"]),
                pusher.channel_info_async("presence-room", ["user_count"]),
                pusher.users_info_async("presence-room"),
            )
        )

    channels, channel, users = run(pusher_app, scenario())
    assert channels == {"channels": {"presence-room": {"user_count": 1}}}
    assert channel["occupied"] is True and channel["user_count"] == 1
    assert users == {"users": [{"id": "ann"}]}


def test_user_methods(pusher_app: Flask, pusher: Pusher) -> None:
    async def scenario() -> list[Any]:
        return [
            await pusher.send_to_user_async("ann", "note", {"text": "hi"}),
            await pusher.terminate_user_connections_async("ann"),
        ]

    assert run(pusher_app, scenario()) == [{}, {}]


def test_an_error_answer_raises_as_in_the_sync_method(pusher_app: Flask, pusher: Pusher) -> None:
    # user_count is for presence channels only: the server answers 400 (reference §4.2).
    with pytest.raises(pusher_http.errors.PusherBadRequest):
        run(pusher_app, pusher.channel_info_async("news", ["user_count"]))
    with pytest.raises(ValueError):
        run(pusher_app, pusher.trigger_async("bad name!", "e", 1))


def test_one_session_per_loop_closed_when_the_loop_ends(pusher_app: Flask, pusher: Pusher) -> None:
    with pusher_app.app_context():
        sender = pusher.client._async_sender

    async def scenario() -> Any:
        await pusher.trigger_async("news", "a", 1)
        session = await sender.session()
        await pusher.trigger_async("news", "b", 2)
        assert await sender.session() is session
        return session

    first = run(pusher_app, scenario())
    assert first.closed
    second = run(pusher_app, scenario())
    assert second is not first and second.closed


def test_aclose_closes_the_session_of_a_loop_run_by_hand(pusher_app: Flask, pusher: Pusher) -> None:
    loop = asyncio.new_event_loop()
    try:

        async def scenario() -> Any:
            with pusher_app.app_context():
                await pusher.trigger_async("news", "a", 1)
                session = await pusher.client._async_sender.session()
                await pusher.aclose()
                return session

        assert loop.run_until_complete(scenario()).closed
    finally:
        loop.close()


def test_async_views(pusher_app: Flask, pusher: Pusher, listener: Listener) -> None:
    """Flask runs each async view in a loop of its own (asgiref): no session leaks."""

    @pusher_app.post("/async")
    async def view() -> dict[str, Any]:
        await pusher.trigger_async("news", "from-view", {"ok": True})
        info: dict[str, Any] = await pusher.channel_info_async("news")
        return info

    client = pusher_app.test_client()
    for _ in range(3):
        response = client.post("/async")
        assert response.json == {"occupied": True}
    gc.collect()  # an unclosed aiohttp session warns when collected; warnings are errors
    assert listener.take(3) == [("news", "from-view", {"ok": True})] * 3


def test_record_events_records_the_async_twins(pusher_app: Flask, pusher: Pusher) -> None:
    async def scenario() -> Any:
        await pusher.trigger_async("news", "a", {"n": 1}, socket_id="1.2")
        await pusher.send_to_user_async("ann", "note", "hi")
        return await pusher.channels_info_async()  # not an event: really sent

    with record_events(pusher_app) as events:
        assert run(pusher_app, scenario()) == {"channels": {}}
    assert [(e.channels, e.name, e.data, e.socket_id) for e in events] == [
        (("news",), "a", '{"n": 1}', "1.2"),
        (("#server-to-user-ann",), "note", "hi", None),
    ]
