"""Dispatch without sockets: bounded streams, waiters, callbacks that raise; and
encrypted events that do not decrypt, over the scripted server (reference §5.9)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import nacl.secret
import pytest

from flask_pusher.channels import AuthOptions
from flask_pusher.channels import AuthRequest
from flask_pusher.channels import ChannelsClient
from flask_pusher.channels import ChannelsError
from flask_pusher.channels import Event
from flask_pusher.channels import ProtocolError
from flask_pusher.channels import QueueOverflow
from flask_pusher.channels import Timeouts
from flask_pusher.channels.events import Dispatcher

from .conftest import run
from .conftest import TIMEOUT
from .scripted import ScriptedServer


def test_a_stream_that_falls_behind_raises_queue_overflow_then_goes_on() -> None:
    async def main() -> None:
        dispatcher = Dispatcher()
        stream = dispatcher.events("e", max_queue=2)
        for i in range(5):
            dispatcher.emit(Event("e", None, i))
        dispatcher.emit(Event("other", None, 0))  # filtered out, never queued
        with pytest.raises(QueueOverflow) as info:
            await stream.__anext__()
        assert info.value.dropped == 3
        assert [(await stream.__anext__()).data for _ in range(2)] == [0, 1]
        stream.close()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    run(main())


def test_callbacks_that_raise_are_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        dispatcher = Dispatcher()
        got: list[int] = []

        def bad(event: Event) -> None:
            raise RuntimeError("boom")

        dispatcher.bind("e", bad)
        dispatcher.bind("e", lambda e: got.append(e.data))
        waiter = asyncio.ensure_future(dispatcher.wait_for("e", TIMEOUT))
        await asyncio.sleep(0)
        dispatcher.emit(Event("e", None, 1))
        assert (await waiter).data == 1 and got == [1]
        dispatcher.unbind("e", bad)
        dispatcher.emit(Event("e", None, 2))
        assert got == [1, 2]
        with pytest.raises(TimeoutError):
            await dispatcher.wait_for("never", 0.05)

    with caplog.at_level(logging.ERROR, "flask_pusher.channels"):
        run(main())
    assert [r.message for r in caplog.records] == ["A callback for 'e' raised"]


def test_encrypted_event_that_does_not_decrypt_asks_for_the_key_once_then_errors() -> None:
    key = bytes(range(32))
    asked: list[str] = []

    def handler(request: AuthRequest) -> dict[str, str]:
        asked.append(request.socket_id)
        return {"auth": "k:sig", "shared_secret": base64.b64encode(key).decode()}

    def frame(payload: dict[str, str]) -> str:
        return json.dumps(
            {"event": "m", "channel": "private-encrypted-x", "data": json.dumps(payload)}
        )

    async def main() -> None:
        async with ScriptedServer() as server:
            client = ChannelsClient(
                "key",
                host="127.0.0.1",
                port=server.port,
                use_tls=False,
                timeouts=Timeouts(first_backoff=0.05),
                channel_authorization=AuthOptions(handler=handler),
            )
            errors: list[ChannelsError] = []
            two = asyncio.Event()

            def on_error(error: ChannelsError) -> None:
                errors.append(error)
                if len(errors) >= 2:
                    two.set()

            client.connection.bind("error", on_error)
            channel = client.subscribe("private-encrypted-x")
            client.connection.start()
            conn = await server.accept()
            await conn.handshake("5.5")
            subscribe = await conn.next_frame()
            assert subscribe["data"] == {"auth": "k:sig", "channel": "private-encrypted-x"}
            await conn.ws.send_str(
                json.dumps(
                    {
                        "event": "pusher_internal:subscription_succeeded",
                        "channel": "private-encrypted-x",
                    }
                )
            )
            await channel.wait_subscribed(TIMEOUT)
            wrong = nacl.secret.SecretBox(bytes(32)).encrypt(b'{"a":1}')
            good = nacl.secret.SecretBox(key).encrypt(b'{"a":2}')
            b64 = base64.b64encode
            waiter = asyncio.ensure_future(channel.wait_for("m", TIMEOUT))
            await conn.ws.send_str(
                frame(
                    {
                        "nonce": b64(wrong.nonce).decode(),
                        "ciphertext": b64(wrong.ciphertext).decode(),
                    }
                )
            )
            await conn.ws.send_str(frame({"no": "ciphertext"}))
            await conn.ws.send_str(
                frame(
                    {"nonce": b64(good.nonce).decode(), "ciphertext": b64(good.ciphertext).decode()}
                )
            )
            assert (await waiter).data == {"a": 2}
            await asyncio.wait_for(two.wait(), TIMEOUT)
            assert all(isinstance(e, ProtocolError) for e in errors)
            assert len(asked) == 2  # the subscription, then one retry for the key
            await client.disconnect()

    run(main())
