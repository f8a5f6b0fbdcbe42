"""Channel routes: ``@pusher.channel("private-orders.{order_id:int}")`` with
Werkzeug's converters (reference §1.2, §1.3 for the signed answers, §2 for batches)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pusher as pusher_http
import pytest
from flask import Flask
from flask import request
from flask.testing import FlaskClient
from pusher.signature import sign

from flask_pusher import Pusher
from flask_pusher.routes import ChannelRoutes
from flask_pusher.routes import to_rule
from flask_pusher.testing import auth_body
from flask_pusher.testing import AUTH_CONTENT_TYPE
from flask_pusher.testing import batch_auth_body

from .conftest import APP_ID
from .conftest import KEY
from .conftest import MASTER_KEY
from .conftest import SECRET
from .conftest import SOCKET_ID

OFFICIAL = pusher_http.Pusher(APP_ID, KEY, SECRET, encryption_master_key_base64=MASTER_KEY)


def post(client: FlaskClient, body: str) -> tuple[int, Any]:
    r = client.post("/pusher/auth", data=body, content_type=AUTH_CONTENT_TYPE)
    assert r.content_type == "application/json"
    return r.status_code, r.json


def authorize(client: FlaskClient, channel: str) -> tuple[int, Any]:
    return post(client, auth_body(SOCKET_ID, channel))


@pytest.mark.parametrize(
    ("pattern", "rule"),
    [
        ("private-orders.{order_id:int}", "/private-orders.<int:order_id>"),
        ("presence-room.{room}", "/presence-room.<room>"),
        ("private-{kind:any(a, b)}.{n:int(min=1)}", "/private-<any(a, b):kind>.<int(min=1):n>"),
        ("private-encrypted-doc.{ id : uuid }", "/private-encrypted-doc.<uuid:id>"),
    ],
)
def test_patterns_become_werkzeug_rules(pattern: str, rule: str) -> None:
    assert to_rule(pattern) == rule


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("orders.{id}", "must start with 'private-' or 'presence-'"),
        ("{kind}-orders", "must start with 'private-' or 'presence-'"),
        ("private-orders.{id", "unbalanced brace"),
        ("private-orders.id}", "unbalanced brace"),
        ("private-a/{x}", "cannot hold"),
        ("private-{1x}", "is not a placeholder"),
        ("private-{x:nope}", "the converter 'nope' does not exist"),
        ("private-{x:int(min=}", "is not valid"),
        ("private-{a}.{a}", "names the parameter 'a' twice"),
        ("", "non-empty string"),
    ],
)
def test_an_invalid_pattern_raises_at_registration(
    pusher: Pusher, pattern: str, message: str
) -> None:
    with pytest.raises(ValueError, match="Channel pattern") as info:
        pusher.channel(pattern)
    assert message in str(info.value)
    assert not pusher.callbacks.channels


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("private-orders.42", ("order", {"order_id": 42})),
        ("private-orders.x", None),  # int does not convert
        ("private-orders.42.1", None),
        ("presence-room.lobby", ("room", {"room": "lobby"})),
        ("presence-room.a.b", None),  # {room} stops at "."
        ("private-files.a.b.c", ("files", {"path": "a.b.c"})),  # {path:path} does not
        (
            "private-encrypted-doc.12345678-1234-5678-1234-567812345678",
            ("doc", {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")}),
        ),
        ("private-cache-price.eur", ("price", {"currency": "eur"})),
        ("private-cache-price.usd", None),
    ],
)
def test_matching_uses_werkzeugs_converters(channel: str, expected: Any) -> None:
    routes = ChannelRoutes()
    routes.add("private-orders.{order_id:int}", "order")  # type: ignore[arg-type]
    routes.add("presence-room.{room}", "room")  # type: ignore[arg-type]
    routes.add("private-files.{path:path}", "files")  # type: ignore[arg-type]
    routes.add("private-encrypted-doc.{id:uuid}", "doc")  # type: ignore[arg-type]
    routes.add("private-cache-price.{currency:any(eur, gbp)}", "price")  # type: ignore[arg-type]
    assert routes.match(channel) == expected


def test_a_private_route_gets_its_parameters_in_the_request_context(
    pusher: Pusher, client: FlaskClient
) -> None:
    calls = []

    @pusher.channel("private-orders.{order_id:int}")
    def order(order_id: int) -> bool:
        calls.append((order_id, request.form["socket_id"]))
        return order_id != 13

    assert authorize(client, "private-orders.42") == (
        200,
        OFFICIAL.authenticate("private-orders.42", SOCKET_ID),
    )
    status, body = authorize(client, "private-orders.13")
    assert (status, body) == (
        403,
        {"error": "Subscription to private-orders.13 is not authorized."},
    )
    assert calls == [(42, SOCKET_ID), (13, SOCKET_ID)]


def test_the_first_match_in_registration_order_wins(pusher: Pusher, client: FlaskClient) -> None:
    seen: list[str] = []

    @pusher.channel("private-{name}")
    def first(name: str) -> bool:
        seen.append(f"first {name}")
        return False

    @pusher.channel("private-vip")
    def second() -> bool:
        seen.append("second")
        return True

    assert authorize(client, "private-vip")[0] == 403
    assert seen == ["first vip"]


def test_no_match_falls_back_to_auth_and_channel_data(pusher: Pusher, client: FlaskClient) -> None:
    pusher.channel("private-orders.{order_id:int}")(lambda order_id: False)
    pusher.auth(lambda channel_name, socket_id: channel_name == "presence-lobby")
    pusher.channel_data(lambda channel_name, socket_id: {"user_id": "7"})
    status, body = authorize(client, "presence-lobby")
    assert status == 200
    assert json.loads(body["channel_data"]) == {"user_id": "7"}
    assert authorize(client, "private-orders.1")[0] == 403  # the route, not @pusher.auth


def test_no_match_and_no_fallback_is_403(pusher: Pusher, client: FlaskClient) -> None:
    pusher.channel("private-orders.{order_id:int}")(lambda order_id: True)
    status, body = authorize(client, "private-other")
    assert status == 403
    assert "No channel route (@pusher.channel) matches" in body["error"]


def test_a_presence_route_returns_the_member(pusher: Pusher, client: FlaskClient) -> None:
    @pusher.channel("presence-room.{room}")
    def room(room: str) -> dict[str, Any] | None:
        if room == "closed":
            return None
        return {"user_id": "ann", "user_info": {"room": room}}

    status, body = authorize(client, "presence-room.lobby")
    member = {"user_id": "ann", "user_info": {"room": "lobby"}}
    assert status == 200
    assert json.loads(body["channel_data"]) == member
    signed = f"{SOCKET_ID}:presence-room.lobby:{body['channel_data']}"
    assert body["auth"] == f"{KEY}:{sign(SECRET, signed)}"
    assert authorize(client, "presence-room.closed")[0] == 403


def test_a_presence_route_that_returns_true_is_a_programming_error(
    pusher: Pusher, client: FlaskClient
) -> None:
    pusher.channel("presence-room.{room}")(lambda room: True)
    with pytest.raises(TypeError, match="must return the member dict"):
        authorize(client, "presence-room.lobby")


def test_encrypted_and_cache_channels(pusher: Pusher, client: FlaskClient) -> None:
    pusher.channel("private-encrypted-doc.{doc:int}")(lambda doc: doc == 1)
    pusher.channel("private-cache-price.{currency}")(lambda currency: True)
    status, body = authorize(client, "private-encrypted-doc.1")
    assert status == 200 and body["shared_secret"]
    assert authorize(client, "private-encrypted-doc.2")[0] == 403
    assert authorize(client, "private-cache-price.eur") == (
        200,
        OFFICIAL.authenticate("private-cache-price.eur", SOCKET_ID),
    )


def test_an_encrypted_route_without_a_master_key_is_refused() -> None:
    app = Flask(__name__)
    app.config.update(PUSHER_APP_ID=APP_ID, PUSHER_KEY=KEY, PUSHER_SECRET=SECRET)
    pusher = Pusher(app)
    pusher.channel("private-encrypted-doc.{doc:int}")(lambda doc: True)
    status, body = authorize(app.test_client(), "private-encrypted-doc.1")
    assert status == 403 and "not enabled" in body["error"]


def test_a_batch_judges_each_channel_through_its_route(pusher: Pusher, client: FlaskClient) -> None:
    pusher.channel("private-orders.{order_id:int}")(lambda order_id: order_id < 10)
    pusher.channel("presence-room.{room}")(lambda room: {"user_id": room})
    channels = ["private-orders.1", "private-orders.99", "presence-room.r1", "private-none"]
    status, body = post(client, batch_auth_body(SOCKET_ID, channels))
    assert status == 200
    assert body["private-orders.1"] == {
        "status": 200,
        "data": OFFICIAL.authenticate("private-orders.1", SOCKET_ID),
    }
    assert body["private-orders.99"]["status"] == 403
    assert json.loads(body["presence-room.r1"]["data"]["channel_data"]) == {"user_id": "r1"}
    assert body["private-none"]["status"] == 403


def test_async_routes(pusher: Pusher, client: FlaskClient) -> None:
    @pusher.channel("private-orders.{order_id:int}")
    async def order(order_id: int) -> bool:
        return order_id == 1

    assert authorize(client, "private-orders.1")[0] == 200
    assert authorize(client, "private-orders.2")[0] == 403


def test_the_decorator_returns_the_function(pusher: Pusher) -> None:
    def order(order_id: int) -> bool:
        return True

    assert pusher.channel("private-orders.{order_id:int}")(order) is order
    assert [route.pattern for route in pusher.callbacks.channels] == [
        "private-orders.{order_id:int}"
    ]
