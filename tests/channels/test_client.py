"""The asyncio client against the local server over real sockets: channels of every
kind, authorization through the app's routes over HTTP, signin, client events
(reference §1, §5.5-§5.11)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flask_pusher.channels import AuthError
from flask_pusher.channels import AuthOptions
from flask_pusher.channels import AuthRequest
from flask_pusher.channels import BadEventName
from flask_pusher.channels import ChannelsClient
from flask_pusher.channels import Event
from flask_pusher.channels import Member
from flask_pusher.channels import PresenceChannel
from flask_pusher.channels import StateChange
from flask_pusher.channels import SubscriptionError
from flask_pusher.channels import UnsupportedFeature
from flask_pusher.names import valid_socket_id
from flask_pusher.server import LocalServer

from .conftest import AuthApp
from .conftest import make_client
from .conftest import run
from .conftest import TIMEOUT


async def trigger(auth_app: AuthApp, channel: str, name: str, data: Any, **kw: Any) -> None:
    """Trigger through the app's extension (the official HTTP client), off the loop."""

    def call() -> None:
        with auth_app.app.app_context():
            auth_app.pusher.trigger(channel, name, data, **kw)

    await asyncio.to_thread(call)


def test_connects_with_pusher_js_states_and_a_socket_id(pusher_server: LocalServer) -> None:
    async def main() -> None:
        client = make_client(pusher_server)
        changes: list[StateChange] = []
        client.connection.bind("state_change", changes.append)
        assert client.connection.state == "initialized"
        async with client:
            assert valid_socket_id(client.connection.socket_id)
            assert "protocol=7" in client.url()
        assert changes == [
            StateChange("initialized", "connecting"),
            StateChange("connecting", "connected"),
            StateChange("connected", "disconnected"),
        ]
        assert client.connection.socket_id is None

    run(main())


def test_public_channel_bind_bind_global_async_for_and_wait_for(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    async def main() -> None:
        async with make_client(pusher_server) as client:
            channel = client.subscribe("room")
            assert client.subscribe("room") is channel
            await channel.wait_subscribed(TIMEOUT)
            bound: list[Event] = []
            every: list[str] = []
            on_client: list[str] = []
            channel.bind("message", bound.append)
            channel.bind_global(lambda e: every.append(e.name))
            client.bind_global(lambda e: on_client.append(f"{e.channel}/{e.name}"))
            stream = channel.events("message")
            waiter = asyncio.ensure_future(channel.wait_for("message", TIMEOUT))
            await trigger(auth_app, "room", "message", {"text": "hi"})
            await trigger(auth_app, "room", "other", "plain text")
            await trigger(auth_app, "room", "message", {"text": "two"})
            first = await waiter
            assert first == Event("message", "room", {"text": "hi"})
            got = [await stream.__anext__(), await stream.__anext__()]
            assert [e.data for e in got] == [{"text": "hi"}, {"text": "two"}]
            assert [e.data for e in bound] == [{"text": "hi"}, {"text": "two"}]
            assert every == ["message", "other", "message"]
            assert on_client == ["room/message", "room/other", "room/message"]
            channel.unbind("message")
            client.unsubscribe("room")
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()

    run(main())


def test_private_channel_authorized_through_the_endpoint_as_pusher_js_asks(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    options = AuthOptions(
        endpoint=f"{auth_app.url}/pusher/auth",
        params={"extra": "a b&c"},
        params_provider=lambda: {"dyn": "1"},
        headers={"X-CSRF-Token": "tok", "X-Dyn": "1"},
        headers_provider=lambda: {"X-Dyn": "2"},
    )

    async def main() -> None:
        async with make_client(pusher_server, channel_authorization=options) as client:
            channel = await client.subscribe("private-room").wait_subscribed(TIMEOUT)
            waiter = asyncio.ensure_future(channel.wait_for("secret", TIMEOUT))
            await trigger(auth_app, "private-room", "secret", [1, 2])
            assert (await waiter).data == [1, 2]
            socket_id = client.connection.socket_id
        path, body, headers = auth_app.requests[-1]
        # Reference §1.2: the body and headers captured from pusher-js 8.6.0.
        assert path == "/pusher/auth"
        assert body == f"socket_id={socket_id}&channel_name=private-room&extra=a%20b%26c&dyn=1"
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert headers["X-Csrf-Token"] == "tok" and headers["X-Dyn"] == "2"

    run(main())


def test_refused_channel_is_an_auth_error_with_its_status(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    async def main() -> None:
        async with make_client(pusher_server, **auth_app.options()) as client:
            channel = client.subscribe("private-forbidden-x")
            errors: list[Event] = []
            channel.bind("pusher:subscription_error", errors.append)
            with pytest.raises(AuthError) as info:
                await channel.wait_subscribed(TIMEOUT)
            assert info.value.status == 403 and info.value.channel == "private-forbidden-x"
            assert errors[0].data == {
                "type": "AuthError",
                "error": info.value.message,
                "status": 403,
            }
            assert not channel.subscribed
            # Without any channel authorization, the same typed error, no status.
            bare = make_client(pusher_server)
            await bare.connect()
            with pytest.raises(AuthError) as none:
                await bare.subscribe("private-x").wait_subscribed(TIMEOUT)
            assert none.value.status is None
            await bare.disconnect()

    run(main())


def test_a_signature_the_server_refuses_is_a_subscription_error(pusher_server: LocalServer) -> None:
    def forged(request: AuthRequest) -> dict[str, str]:
        return {"auth": "flask-pusher-test:" + "0" * 64}

    async def main() -> None:
        options = AuthOptions(handler=forged)
        async with make_client(pusher_server, channel_authorization=options) as client:
            with pytest.raises(SubscriptionError) as info:
                await client.subscribe("private-room").wait_subscribed(TIMEOUT)
            assert info.value.status == 401 and not isinstance(info.value, AuthError)

    run(main())


def test_presence_members_me_added_and_removed(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    def as_user(name: str) -> dict[str, Any]:
        return auth_app.options(
            channel_authorization=AuthOptions(
                endpoint=f"{auth_app.url}/pusher/auth", params={"user": name}
            )
        )

    async def main() -> None:
        async with make_client(pusher_server, **as_user("ann")) as ann:
            room = ann.subscribe("presence-room")
            assert isinstance(room, PresenceChannel)
            await room.wait_subscribed(TIMEOUT)
            assert room.members.me == Member("ann", {"name": "ANN"}) and room.members.count == 1
            added = asyncio.ensure_future(room.wait_for("pusher:member_added", TIMEOUT))
            bob = make_client(pusher_server, **as_user("bob"))
            await bob.connect()
            bobs = bob.subscribe("presence-room")
            assert isinstance(bobs, PresenceChannel)
            succeeded = asyncio.ensure_future(
                bobs.wait_for("pusher:subscription_succeeded", TIMEOUT)
            )
            await bobs.wait_subscribed(TIMEOUT)
            assert (await succeeded).data is bobs.members
            assert sorted(m.id for m in bobs.members) == ["ann", "bob"]
            assert (await added).data == Member("bob", {"name": "BOB"})
            assert "bob" in room.members and room.members.count == 2
            removed = asyncio.ensure_future(room.wait_for("pusher:member_removed", TIMEOUT))
            await bob.disconnect()
            assert (await removed).data == Member("bob", {"name": "BOB"})
            assert [m.id for m in room.members] == ["ann"]

    run(main())


def test_client_events_reach_the_others_with_user_id_on_presence(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    async def main() -> None:
        async with (
            make_client(pusher_server, **auth_app.options()) as a,
            make_client(pusher_server, **auth_app.options()) as b,
        ):
            for name in ("private-chat", "presence-chat"):
                mine = await a.subscribe(name).wait_subscribed(TIMEOUT)
                theirs = await b.subscribe(name).wait_subscribed(TIMEOUT)
                waiter = asyncio.ensure_future(theirs.wait_for("client-typing", TIMEOUT))
                echo = asyncio.ensure_future(mine.wait_for("client-typing", 0.5))
                assert await mine.trigger("client-typing", {"on": True})
                event = await waiter
                assert event.data == {"on": True}
                assert event.user_id == ("u1" if name.startswith("presence-") else None)
                with pytest.raises(TimeoutError):
                    await echo  # never delivered back to the sender (reference §5.7)
                with pytest.raises(BadEventName):
                    await mine.trigger("typing", {})
            encrypted = a.subscribe("private-encrypted-x")
            with pytest.raises(UnsupportedFeature):
                await encrypted.trigger("client-x", {})

    run(main())


def test_encrypted_channel_events_are_decrypted(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    async def main() -> None:
        async with make_client(pusher_server, **auth_app.options()) as client:
            channel = await client.subscribe("private-encrypted-room").wait_subscribed(TIMEOUT)
            waiter = asyncio.ensure_future(channel.wait_for("message", TIMEOUT))
            await trigger(auth_app, "private-encrypted-room", "message", {"text": "secret"})
            assert (await waiter).data == {"text": "secret"}

    run(main())


def test_encrypted_channel_without_shared_secret_is_refused(pusher_server: LocalServer) -> None:
    async def main() -> None:
        options = AuthOptions(handler=lambda request: {"auth": "k:sig"})
        async with make_client(pusher_server, channel_authorization=options) as client:
            with pytest.raises(AuthError, match="No shared_secret"):
                await client.subscribe("private-encrypted-x").wait_subscribed(TIMEOUT)

    run(main())


def test_cache_channel_miss_then_cached_event(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    async def main() -> None:
        async with make_client(pusher_server) as client:
            channel = client.subscribe("cache-prices")
            miss = await channel.wait_for("pusher:cache_miss", TIMEOUT)
            assert miss.channel == "cache-prices"
            await trigger(auth_app, "cache-prices", "price", {"eur": 3})
            async with make_client(pusher_server) as later:
                cached = await later.subscribe("cache-prices").wait_for("price", TIMEOUT)
                assert cached.data == {"eur": 3}

    run(main())


def test_subscription_count(pusher_server: LocalServer) -> None:
    async def main() -> None:
        async with make_client(pusher_server) as a, make_client(pusher_server) as b:
            channel = await a.subscribe("counted").wait_subscribed(TIMEOUT)
            counts: list[int] = []
            channel.bind(
                "pusher:subscription_count", lambda e: counts.append(e.data["subscription_count"])
            )
            two = asyncio.ensure_future(channel.wait_for("pusher:subscription_count", TIMEOUT))
            b.subscribe("counted")
            await two
            assert channel.subscription_count == 2 and counts[-1] == 2

    run(main())


def test_signin_user_events_and_watchlist(pusher_server: LocalServer, auth_app: AuthApp) -> None:
    def signin_as(name: str, watch: str = "") -> dict[str, Any]:
        return auth_app.options(
            user_authentication=AuthOptions(
                endpoint=f"{auth_app.url}/pusher/user-auth", params={"user": name, "watch": watch}
            )
        )

    async def main() -> None:
        async with make_client(pusher_server, **signin_as("ann", "bob")) as ann:
            ann.signin()
            assert (await ann.user.wait_signed_in(TIMEOUT))["id"] == "ann"
            online = asyncio.ensure_future(ann.user.watchlist.wait_for("online", TIMEOUT))
            async with make_client(pusher_server, **signin_as("bob")) as bob:
                await bob.user.wait_signed_in(TIMEOUT)
                assert (await online).data["user_ids"] == ["bob"]
                note = asyncio.ensure_future(ann.user.wait_for("note", TIMEOUT))

                def send() -> None:
                    with auth_app.app.app_context():
                        auth_app.pusher.send_to_user("ann", "note", {"n": 1})

                await asyncio.to_thread(send)
                assert (await note).data == {"n": 1}
            path, body, _ = auth_app.requests[-1]
            assert path == "/pusher/user-auth" and body.startswith("socket_id=")

    run(main())


def test_refused_signin_is_an_auth_error(pusher_server: LocalServer) -> None:
    def refuse(request: AuthRequest) -> dict[str, str]:
        raise AuthError("", "AuthError", "no", 403)

    async def main() -> None:
        async with make_client(pusher_server, user_authentication=AuthOptions(handler=refuse)) as c:
            errors: list[Event] = []
            c.user.bind("pusher:signin_error", errors.append)
            with pytest.raises(AuthError) as info:
                await c.user.wait_signed_in(TIMEOUT)
            assert info.value.status == 403 and errors[0].data["status"] == 403

    run(main())


def test_batch_endpoint_one_request_for_channels_asked_together(
    pusher_server: LocalServer, auth_app: AuthApp
) -> None:
    async def main() -> None:
        options = AuthOptions(endpoint=f"{auth_app.url}/pusher/auth", batch=True)
        client = make_client(pusher_server, channel_authorization=options)
        for name in ("private-a", "private-b", "presence-c", "private-forbidden-d"):
            client.subscribe(name)
        await client.connect()
        for name in ("private-a", "private-b", "presence-c"):
            await client.channels[name].wait_subscribed(TIMEOUT)
        with pytest.raises(AuthError) as info:
            await client.channels["private-forbidden-d"].wait_subscribed(TIMEOUT)
        assert info.value.status == 403
        await client.disconnect()
        bodies = [body for path, body, _ in auth_app.requests if path == "/pusher/auth"]
        # pusher-js-auth's body (reference §2): one request, starting with "&".
        assert len(bodies) == 1 and bodies[0].startswith("&socket_id=")
        assert "&channel_name[3]=private-forbidden-d" in bodies[0]

    run(main())


def test_invalid_channel_name_raises_at_once(pusher_server: LocalServer) -> None:
    client = make_client(pusher_server)
    for bad in ("", "a b", "x" * 201, "é"):
        with pytest.raises(ValueError, match="Invalid channel name"):
            client.subscribe(bad)


@pytest.mark.parametrize(("kwargs", "message"), [({"key": ""}, "key"), ({}, "cluster")])
def test_setup_mistakes_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChannelsClient(**{"key": "k", **kwargs})
