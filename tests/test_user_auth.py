"""User authentication: POST /pusher/user-auth (reference §1.3, §1.5)."""

from __future__ import annotations

import hmac
import json
from typing import Any

import pusher as pusher_http
import pytest
from flask.testing import FlaskClient

from flask_pusher import Pusher
from flask_pusher.testing import AUTH_CONTENT_TYPE
from flask_pusher.testing import user_auth_body

from .conftest import APP_ID
from .conftest import json_body
from .conftest import KEY
from .conftest import SECRET
from .conftest import SOCKET_ID


def post(client: FlaskClient, body: str) -> tuple[int, dict[str, Any]]:
    r = client.post("/pusher/user-auth", data=body, content_type=AUTH_CONTENT_TYPE)
    assert r.content_type == "application/json"
    return r.status_code, json_body(r)


def test_is_signed_as_the_official_library_does(client: FlaskClient, pusher: Pusher) -> None:
    # user_data is json.dumps with its default separators, as pusher-http-python
    # encodes it (issue 10 item 5); the docs' vector (reference §1.3) signs compact JSON.
    pusher.user_data(lambda socket_id: {"id": "12345"})
    status, body = post(client, user_auth_body(SOCKET_ID))
    assert status == 200
    official = pusher_http.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)
    assert body == official.authenticate_user(SOCKET_ID, {"id": "12345"})
    assert body["user_data"] == '{"id": "12345"}'
    signed = hmac.new(SECRET.encode(), f"{SOCKET_ID}::user::{body['user_data']}".encode(), "sha256")
    assert body["auth"] == f"{KEY}:{signed.hexdigest()}"


def test_user_info_and_watchlist(client: FlaskClient, pusher: Pusher) -> None:
    seen = []

    @pusher.user_data
    def user(socket_id: str) -> dict[str, Any]:
        seen.append(socket_id)
        return {"id": "u1", "user_info": {"name": "Ann"}, "watchlist": ["u2", "u3"]}

    status, body = post(client, user_auth_body("7.8", {"extra": "x"}))
    assert status == 200 and seen == ["7.8"]
    assert json.loads(body["user_data"]) == {
        "id": "u1",
        "user_info": {"name": "Ann"},
        "watchlist": ["u2", "u3"],
    }


def test_an_int_id_is_sent_as_a_string(client: FlaskClient, pusher: Pusher) -> None:
    pusher.user_data(lambda socket_id: {"id": 42})
    assert json.loads(post(client, user_auth_body("1.2"))[1]["user_data"]) == {"id": "42"}


def test_async_callback(client: FlaskClient, pusher: Pusher) -> None:
    @pusher.user_data
    async def user(socket_id: str) -> dict[str, Any]:
        return {"id": "async"}

    assert post(client, user_auth_body("1.2"))[0] == 200


def test_no_callback_is_403(client: FlaskClient) -> None:
    status, body = post(client, user_auth_body("1.2"))
    assert status == 403 and "@pusher.user_data" in body["error"]


def test_none_is_403(client: FlaskClient, pusher: Pusher) -> None:
    pusher.user_data(lambda socket_id: None)
    assert post(client, user_auth_body("1.2"))[0] == 403


@pytest.mark.parametrize("body", ["", "socket_id=", "socket_id=x.1", "socket_id=1.2.3"])
def test_malformed_socket_id_is_400(client: FlaskClient, pusher: Pusher, body: str) -> None:
    pusher.user_data(lambda socket_id: {"id": "u"})
    status, answer = post(client, body)
    assert status == 400 and "socket_id" in answer["error"]


def test_json_body(client: FlaskClient, pusher: Pusher) -> None:
    pusher.user_data(lambda socket_id: {"id": "u"})
    assert client.post("/pusher/user-auth", json={"socket_id": "1.2"}).status_code == 200
