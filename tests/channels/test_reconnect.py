"""The client's connection over real sockets: refusals, unreachable hosts, server
restarts, each close-code class, pings and malformed frames (reference §5.3,
§5.4, §5.12; pusher-js 8.6 ``connection_manager.ts``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pusher as pusher_http
import pytest

from flask_pusher.channels import AuthOptions
from flask_pusher.channels import AuthRequest
from flask_pusher.channels import ChannelsClient
from flask_pusher.channels import ChannelsError
from flask_pusher.channels import ConnectionRefused
from flask_pusher.channels import ProtocolError
from flask_pusher.channels import PusherError
from flask_pusher.channels import StateChange
from flask_pusher.channels import Timeouts
from flask_pusher.channels import TransportError
from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer
from flask_pusher.testing import TEST_APP_ID
from flask_pusher.testing import TEST_KEY
from flask_pusher.testing import TEST_SECRET

from .conftest import make_client
from .conftest import run
from .conftest import TIMEOUT
from .scripted import free_port
from .scripted import ScriptedServer

FAST = Timeouts(unavailable=0.5, first_backoff=0.05, max_backoff=0.2, connect=5)


def scripted_client(server: ScriptedServer, timeouts: Timeouts = FAST) -> ChannelsClient:
    return ChannelsClient(
        "key", host="127.0.0.1", port=server.port, use_tls=False, timeouts=timeouts
    )


def test_wrong_key_is_refused_with_4001_and_not_retried(pusher_server: LocalServer) -> None:
    async def main() -> None:
        client = make_client(pusher_server, key="no-such-key", timeouts=FAST)
        errors: list[ChannelsError] = []
        changes: list[StateChange] = []
        client.connection.bind("error", errors.append)
        client.connection.bind("state_change", changes.append)
        with pytest.raises(ConnectionRefused) as info:
            await client.connect(TIMEOUT)
        assert info.value.code == 4001
        assert client.connection.state == "disconnected"
        assert [e.code for e in errors if isinstance(e, PusherError)] == [4001]
        await asyncio.sleep(0.3)  # a retry would show as a new state change
        assert changes == [
            StateChange("initialized", "connecting"),
            StateChange("connecting", "disconnected"),
        ]
        await client.disconnect()

    run(main())


def test_unreachable_host_backs_off_goes_unavailable_and_stops_on_disconnect() -> None:
    async def main() -> None:
        client = ChannelsClient(
            "k", host="127.0.0.1", port=free_port(), use_tls=False, timeouts=FAST
        )
        errors: list[ChannelsError] = []
        delays: list[float] = []
        client.connection.bind("error", errors.append)
        client.connection.bind("connecting_in", delays.append)
        with pytest.raises(TimeoutError):
            await client.connect(0.2)
        await client.connection.wait_for_state("unavailable", TIMEOUT)
        assert errors and all(isinstance(e, TransportError) for e in errors)
        assert delays[:3] == [0.05, 0.1, 0.2]
        await client.disconnect()
        assert client.connection.state == "disconnected"

    run(main())


def test_reconnects_after_a_server_restart_and_subscribes_again() -> None:
    port = free_port()
    apps = [AppConfig(TEST_APP_ID, TEST_KEY, TEST_SECRET)]
    http = pusher_http.Pusher(
        TEST_APP_ID, TEST_KEY, TEST_SECRET, host="127.0.0.1", port=port, ssl=False
    )

    def sign(request: AuthRequest) -> Any:
        return http.authenticate(request.channel_name, request.socket_id)

    async def main() -> None:
        server = LocalServer(apps, port=port).start()
        client = ChannelsClient(
            TEST_KEY,
            host="127.0.0.1",
            port=port,
            use_tls=False,
            timeouts=FAST,
            channel_authorization=AuthOptions(handler=sign),
        )
        errors: list[ChannelsError] = []
        client.connection.bind("error", errors.append)
        await client.connect(TIMEOUT)
        public = await client.subscribe("room").wait_subscribed(TIMEOUT)
        private = await client.subscribe("private-room").wait_subscribed(TIMEOUT)
        first_id = client.connection.socket_id
        down = asyncio.ensure_future(client.connection.wait_for_state("connecting", TIMEOUT))
        await asyncio.to_thread(server.stop)
        await down
        assert not public.subscribed and not private.subscribed
        assert 4200 in [e.code for e in errors if isinstance(e, PusherError)]
        again = asyncio.ensure_future(private.wait_for("pusher:subscription_succeeded", 30))
        server = await asyncio.to_thread(LocalServer(apps, port=port).start)
        try:
            await again
            await public.wait_subscribed(TIMEOUT)
            assert client.connection.socket_id not in (None, first_id)
            message = asyncio.ensure_future(private.wait_for("m", TIMEOUT))
            await asyncio.to_thread(http.trigger, "private-room", "m", {"back": True})
            assert (await message).data == {"back": True}
        finally:
            await client.disconnect()
            await asyncio.to_thread(server.stop)

    run(main())


def test_terminated_user_is_refused_with_4009(pusher_server: LocalServer) -> None:
    http = pusher_http.Pusher(
        TEST_APP_ID,
        TEST_KEY,
        TEST_SECRET,
        host=pusher_server.host,
        port=pusher_server.port,
        ssl=False,
    )

    def user(request: AuthRequest) -> Any:
        return http.authenticate_user(request.socket_id, {"id": "gone"})

    async def main() -> None:
        client = make_client(
            pusher_server, timeouts=FAST, user_authentication=AuthOptions(handler=user)
        )
        await client.connect(TIMEOUT)
        await client.user.wait_signed_in(TIMEOUT)
        gone = asyncio.ensure_future(client.connection.wait_for_state("disconnected", TIMEOUT))
        await asyncio.to_thread(http.terminate_user_connections, "gone")
        await gone
        assert isinstance(client.connection.last_error, ConnectionRefused)
        assert client.connection.last_error.code == 4009
        await client.disconnect()

    run(main())


@pytest.mark.parametrize(
    ("code", "least", "most"),
    [(4100, 0.9, 5.0), (4199, 0.9, 5.0), (4200, 0.0, 0.5), (4201, 0.0, 0.5), (1000, 0.9, 5.0)],
)
def test_each_close_code_class_reconnects_after_its_delay(
    code: int, least: float, most: float
) -> None:
    async def main() -> None:
        async with ScriptedServer() as server:
            client = scripted_client(server)
            client.connection.bind("error", lambda e: None)
            client.connection.start()
            conn = await server.accept()
            await conn.handshake("1.1")
            await client.connection.wait_for_state("connected", TIMEOUT)
            loop = asyncio.get_running_loop()
            start = loop.time()
            await conn.close(code, "scripted")
            second = await server.accept()
            elapsed = loop.time() - start
            await second.handshake("2.2")
            await client.connection.wait_for_state("connected", TIMEOUT)
            assert client.connection.socket_id == "2.2"
            assert least <= elapsed <= most, elapsed
            await client.disconnect()

    run(main())


@pytest.mark.parametrize("code", [4001, 4004, 4099, 4301])
def test_refusing_close_codes_on_a_live_connection_stop(code: int) -> None:
    async def main() -> None:
        async with ScriptedServer() as server:
            client = scripted_client(server)
            client.connection.start()
            conn = await server.accept()
            await conn.handshake()
            await client.connection.wait_for_state("connected", TIMEOUT)
            gone = asyncio.ensure_future(client.connection.wait_for_state("disconnected", TIMEOUT))
            await conn.close(code, "go away")
            await gone
            assert isinstance(client.connection.last_error, ConnectionRefused)
            assert client.connection.last_error.code == code
            with pytest.raises(asyncio.TimeoutError):
                await server.accept(timeout=1.2)  # no new attempt
            await client.disconnect()

    run(main())


def test_malformed_frames_are_errors_and_the_connection_stays() -> None:
    async def main() -> None:
        async with ScriptedServer() as server:
            client = scripted_client(server)
            errors: list[ChannelsError] = []
            client.connection.bind("error", errors.append)
            channel = client.subscribe("room")
            client.connection.start()
            conn = await server.accept()
            await conn.handshake()
            assert (await conn.next_frame())["event"] == "pusher:subscribe"
            await conn.ws.send_str(
                '{"event":"pusher_internal:subscription_succeeded","channel":"room"}'
            )
            await channel.wait_subscribed(TIMEOUT)
            waiter = asyncio.ensure_future(channel.wait_for("ok", TIMEOUT))
            for bad in (
                "not json",
                "[]",
                '{"no":"event"}',
                '{"event":"e","channel":"room","data":"{"}',
            ):
                await conn.ws.send_str(bad)
            await conn.ws.send_bytes(b"\x00")
            await conn.ws.send_str('{"event":"ok","channel":"room","data":"1"}')
            assert (await waiter).data == 1
            kinds = [type(e) for e in errors]
            assert kinds == [ProtocolError] * 4, errors
            assert client.connection.state == "connected"
            await client.disconnect()

    run(main())


def test_invalid_handshake_is_retried_with_backoff() -> None:
    async def main() -> None:
        async with ScriptedServer() as server:
            client = scripted_client(server)
            errors: list[ChannelsError] = []
            client.connection.bind("error", errors.append)
            client.connection.start()
            first = await server.accept()
            await first.ws.send_str('{"event":"pusher_internal:subscription_succeeded"}')
            second = await server.accept()
            await second.handshake("3.3")
            await client.connection.wait_for_state("connected", TIMEOUT)
            assert isinstance(errors[0], ProtocolError) and "Invalid handshake" in str(errors[0])
            await client.disconnect()

    run(main())


def test_pings_after_activity_timeout_and_reconnects_without_a_pong() -> None:
    async def main() -> None:
        async with ScriptedServer() as server:
            client = scripted_client(server, Timeouts(pong=0.3, first_backoff=0.05))
            client.connection.start()
            conn = await server.accept()
            await conn.handshake(activity_timeout=1)  # the server's shorter timeout wins
            await conn.ws.send_str('{"event":"pusher:ping","data":"{}"}')
            assert (await conn.next_frame())["event"] == "pusher:pong"
            ping = await conn.next_frame(5)
            assert ping == {"event": "pusher:ping", "data": {}}
            again = await server.accept(5)  # no answer: a new connection
            await again.handshake("4.4")
            await client.connection.wait_for_state("connected", TIMEOUT)
            assert client.connection.socket_id == "4.4"
            await client.disconnect()

    run(main())
