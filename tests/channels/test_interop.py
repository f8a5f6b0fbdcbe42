"""The client against two Pusher servers, the local one and soketi 1.6.1, with
pusher-js 8.6 in Node receiving the same events in the same test as the
reference (reference §5; pusher-servers §3, §8)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher as pusher_http
import pytest
from flask import Flask
from flask import request

from flask_pusher import Pusher
from flask_pusher.channels import AuthError
from flask_pusher.channels import AuthOptions
from flask_pusher.channels import AuthRequest
from flask_pusher.channels import ChannelsClient
from flask_pusher.channels import ConnectionRefused
from flask_pusher.channels import Event
from flask_pusher.channels import Member
from flask_pusher.channels import SubscriptionError
from flask_pusher.server import LocalServer
from flask_pusher.testing import TEST_APP_ID
from flask_pusher.testing import TEST_KEY
from flask_pusher.testing import TEST_MASTER_KEY
from flask_pusher.testing import TEST_SECRET

from ..needs import unavailable
from ..serving import serve_http
from . import soketi
from .conftest import run
from .conftest import TIMEOUT

LISTEN_JS = Path(__file__).with_name("pusherjs_listen.js")


@dataclasses.dataclass
class Target:
    """A Pusher server, its app, and the app's auth routes over HTTP."""

    name: str
    host: str
    port: int
    app_id: str
    key: str
    secret: str
    auth_url: str = ""

    def http(self) -> Any:
        return pusher_http.Pusher(
            self.app_id,
            self.key,
            self.secret,
            host=self.host,
            port=self.port,
            ssl=False,
            encryption_master_key_base64=TEST_MASTER_KEY,
        )

    def client(self, key: str | None = None, user: str = "u1") -> ChannelsClient:
        auth = AuthOptions(endpoint=f"{self.auth_url}/pusher/auth", params={"user": user})
        signin = AuthOptions(endpoint=f"{self.auth_url}/pusher/user-auth", params={"user": user})
        return ChannelsClient(
            key or self.key,
            host=self.host,
            port=self.port,
            use_tls=False,
            channel_authorization=auth,
            user_authentication=signin,
        )


@pytest.fixture(scope="module")
def soketi_server() -> Iterator[soketi.Soketi]:
    if not soketi.available():
        unavailable("needs node and `npm ci` (@soketi/soketi in node_modules).")
    server = soketi.Soketi()
    yield server
    server.stop()


@pytest.fixture(params=["local", "soketi"])
def target(request: pytest.FixtureRequest, pusher_server: LocalServer) -> Iterator[Target]:
    if request.param == "local":
        t = Target(
            "local", pusher_server.host, pusher_server.port, TEST_APP_ID, TEST_KEY, TEST_SECRET
        )
    else:
        s = request.getfixturevalue("soketi_server")
        t = Target("soketi", s.host, s.port, soketi.APP_ID, soketi.KEY, soketi.SECRET)
    app = Flask("interop")
    app.config.update(
        PUSHER_APP_ID=t.app_id,
        PUSHER_KEY=t.key,
        PUSHER_SECRET=t.secret,
        PUSHER_HOST=t.host,
        PUSHER_PORT=t.port,
        PUSHER_SSL=False,
        PUSHER_ENCRYPTION_MASTER_KEY_BASE64=TEST_MASTER_KEY,
    )
    pusher = Pusher(app)
    pusher.auth(lambda channel_name, socket_id: not channel_name.startswith("private-forbidden"))
    pusher.channel_data(lambda channel_name, socket_id: {"user_id": request_user()})
    pusher.user_data(lambda socket_id: {"id": request_user()})
    with serve_http(app) as url:
        t.auth_url = url
        yield t


def request_user() -> str:
    return request.form.get("user", "u1")


def comparable(event: Event) -> dict[str, Any]:
    data = event.data
    if isinstance(data, Member):
        data = {"id": data.id, "info": data.info}
    return {"channel": event.channel, "event": event.name, "data": data}


def test_same_events_as_pusher_js(target: Target) -> None:
    channels = ["room", "private-room", "private-encrypted-room", "presence-room"]
    config = {
        "key": target.key,
        "host": target.host,
        "port": target.port,
        "authEndpoint": f"{target.auth_url}/pusher/auth",
        "channels": channels,
        "count": 5,
    }
    node = subprocess.Popen(
        ["node", str(LISTEN_JS), json.dumps(config)],
        cwd=LISTEN_JS.parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert node.stdout is not None
        assert json.loads(node.stdout.readline()) == {"ready": True}

        async def main() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            async with target.client() as client:
                for name in channels:
                    channel = client.subscribe(name)
                    await channel.wait_subscribed(TIMEOUT)
                    channel.bind_global(
                        lambda e: (
                            None
                            if e.name.startswith("pusher:subscription")
                            else got.append(comparable(e))
                        )
                    )
                api = target.http()
                await asyncio.to_thread(api.trigger, "room", "json", {"a": [1, 2]})
                await asyncio.to_thread(api.trigger, "room", "text", "just text")
                await asyncio.to_thread(api.trigger, "private-room", "list", [1, "two"])
                await asyncio.to_thread(api.trigger, "private-encrypted-room", "secret", {"k": "v"})
                added = asyncio.ensure_future(
                    client.channels["presence-room"].wait_for("pusher:member_added", TIMEOUT)
                )
                async with target.client(user="u2") as other:
                    await other.subscribe("presence-room").wait_subscribed(TIMEOUT)
                    await added
            return got

        ours = run(main())
        theirs = [json.loads(line) for line in node.stdout]
        assert node.wait(20) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(10)
        if node.stdout is not None:
            node.stdout.close()
    for event in theirs:  # JSON has no undefined: soketi sends no user_info
        if event["event"] == "pusher:member_added":
            event["data"].setdefault("info", None)
    assert ours == theirs
    assert [e["event"] for e in ours] == ["json", "text", "list", "secret", "pusher:member_added"]
    assert ours[3]["data"] == {"k": "v"} and ours[4]["data"] == {"id": "u2", "info": None}


def test_client_events_cache_and_signin(target: Target) -> None:
    async def main() -> None:
        async with target.client() as a, target.client(user="u2") as b:
            mine = await a.subscribe("presence-chat").wait_subscribed(TIMEOUT)
            theirs = await b.subscribe("presence-chat").wait_subscribed(TIMEOUT)
            waiter = asyncio.ensure_future(theirs.wait_for("client-hi", TIMEOUT))
            assert await mine.trigger("client-hi", {"x": 1})
            event = await waiter
            assert event.data == {"x": 1} and event.user_id == "u1"

            miss = await a.subscribe("cache-quotes").wait_for("pusher:cache_miss", TIMEOUT)
            assert miss.channel == "cache-quotes"

            b.signin()
            assert (await b.user.wait_signed_in(TIMEOUT))["id"] == "u2"
            note = asyncio.ensure_future(b.user.wait_for("note", TIMEOUT))
            await asyncio.to_thread(target.http().send_to_user, "u2", "note", {"n": 1})
            assert (await note).data == {"n": 1}

    run(main())


def test_refusals_are_typed(target: Target) -> None:
    async def main() -> None:
        with pytest.raises(ConnectionRefused) as refused:
            await target.client(key="no-such-key").connect(TIMEOUT)
        assert refused.value.code == 4001

        def forged(request: AuthRequest) -> dict[str, str]:
            return {"auth": f"{target.key}:{'0' * 64}"}

        async with target.client() as client:
            with pytest.raises(AuthError) as denied:
                await client.subscribe("private-forbidden-x").wait_subscribed(TIMEOUT)
            assert denied.value.status == 403
        forging = ChannelsClient(
            target.key,
            host=target.host,
            port=target.port,
            use_tls=False,
            channel_authorization=AuthOptions(handler=forged),
        )
        async with forging:
            with pytest.raises(SubscriptionError) as bad:
                await forging.subscribe("private-room").wait_subscribed(TIMEOUT)
            assert bad.value.status == 401

    run(main())
