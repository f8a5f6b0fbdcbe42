"""Channel authorization: POST /pusher/auth, single and batch (reference §1.2, §1.3, §2)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pusher as pusher_http
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pusher.crypto import generate_shared_secret

from flask_pusher import ChannelAuthorizationDenied
from flask_pusher import Pusher
from flask_pusher.testing import auth_body
from flask_pusher.testing import AUTH_CONTENT_TYPE
from flask_pusher.testing import batch_auth_body

from .conftest import APP_ID
from .conftest import json_body
from .conftest import KEY
from .conftest import MASTER_KEY
from .conftest import SECRET
from .conftest import SOCKET_ID

#: Bodies captured from pusher-js 8.6.0 and pusher-js-auth 4.0.1 (reference §1.2, §2).
PUSHER_JS_BODY = "socket_id=829555288.204880631&channel_name=private-room&extra=a%20b%26c&dyn=1"
PUSHER_JS_AUTH_BODY = (
    "&socket_id=870423868.36814378&channel_name[0]=private-a&channel_name[1]=private-b"
    "&channel_name[2]=presence-c&channel_name[3]=private-forbidden&extra=p"
)


def hmac_hex(text: str) -> str:
    return hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


def post(client: FlaskClient, body: str) -> tuple[int, dict[str, Any]]:
    r = client.post("/pusher/auth", data=body, content_type=AUTH_CONTENT_TYPE)
    assert r.content_type == "application/json"
    return r.status_code, json_body(r)


@pytest.fixture
def allow_all(pusher: Pusher) -> Pusher:
    pusher.auth(lambda channel_name, socket_id: True)
    return pusher


def test_helpers_build_the_captured_bodies() -> None:
    assert auth_body("829555288.204880631", "private-room", {"extra": "a b&c", "dyn": "1"}) == (
        PUSHER_JS_BODY
    )
    assert (
        batch_auth_body(
            "870423868.36814378",
            ["private-a", "private-b", "presence-c", "private-forbidden"],
            {"extra": "p"},
        )
        == PUSHER_JS_AUTH_BODY
    )


def test_private_channel_matches_the_reference_vector(
    client: FlaskClient, allow_all: Pusher
) -> None:
    status, body = post(client, auth_body(SOCKET_ID, "private-foobar"))
    assert status == 200
    assert body == {
        "auth": f"{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    }


def test_presence_channel_is_signed_as_the_official_library_does(
    client: FlaskClient, pusher: Pusher
) -> None:
    # The docs' vector (reference §1.3) signs compact JSON; pusher-http-python, and so
    # pysher, use json.dumps's default separators (reference §1.3 notes, issue 10 item 5).
    pusher.auth(lambda channel_name, socket_id: True)
    pusher.channel_data(
        lambda channel_name, socket_id: {"user_id": 10, "user_info": {"name": "Mr. Channels"}}
    )
    status, body = post(client, auth_body(SOCKET_ID, "presence-foobar"))
    assert status == 200
    assert body["channel_data"] == '{"user_id": 10, "user_info": {"name": "Mr. Channels"}}'
    official = pusher_http.Pusher(app_id=APP_ID, key=KEY, secret=SECRET).authenticate(
        "presence-foobar", SOCKET_ID, {"user_id": 10, "user_info": {"name": "Mr. Channels"}}
    )
    assert body == official
    assert (
        body["auth"] == f"{KEY}:{hmac_hex(f'{SOCKET_ID}:presence-foobar:' + body['channel_data'])}"
    )


def test_presence_default_member_is_the_socket_id(client: FlaskClient, allow_all: Pusher) -> None:
    _, body = post(client, auth_body("5.6", "presence-room"))
    assert json.loads(body["channel_data"]) == {"user_id": "5.6"}
    # The response carries exactly the string that was signed.
    assert body["auth"] == f"{KEY}:{hmac_hex('5.6:presence-room:' + body['channel_data'])}"


def test_channel_data_is_merged_over_the_default(client: FlaskClient, pusher: Pusher) -> None:
    pusher.auth(lambda channel_name, socket_id: True)
    pusher.channel_data(lambda channel_name, socket_id: {"user_info": {"n": channel_name}})
    _, body = post(client, auth_body("5.6", "presence-room"))
    assert json.loads(body["channel_data"]) == {
        "user_id": "5.6",
        "user_info": {"n": "presence-room"},
    }


def test_encrypted_channel_returns_a_base64_string_secret(
    client: FlaskClient, allow_all: Pusher
) -> None:
    status, body = post(client, auth_body(SOCKET_ID, "private-encrypted-room"))
    assert status == 200
    assert isinstance(body["shared_secret"], str)
    expected = generate_shared_secret(b"private-encrypted-room", base64.b64decode(MASTER_KEY))
    assert base64.b64decode(body["shared_secret"]) == expected
    # The secret is not signed (reference §1.3).
    assert body["auth"] == f"{KEY}:{hmac_hex(SOCKET_ID + ':private-encrypted-room')}"


def test_encrypted_channel_without_a_master_key_is_refused(app: Flask) -> None:
    del app.config["PUSHER_ENCRYPTION_MASTER_KEY_BASE64"]
    pusher = Pusher(app)
    pusher.auth(lambda channel_name, socket_id: True)
    status, body = post(app.test_client(), auth_body(SOCKET_ID, "private-encrypted-x"))
    assert status == 403 and "not enabled" in body["error"]


@pytest.mark.parametrize(
    "channel", ["private-cache-room", "presence-cache-room", "private-encrypted-cache-room"]
)
def test_cache_channels(client: FlaskClient, allow_all: Pusher, channel: str) -> None:
    status, body = post(client, auth_body(SOCKET_ID, channel))
    assert status == 200 and body["auth"].startswith(KEY + ":")


def test_json_body(client: FlaskClient, allow_all: Pusher) -> None:
    r = client.post("/pusher/auth", json={"socket_id": SOCKET_ID, "channel_name": "private-foobar"})
    assert r.status_code == 200 and json_body(r)["auth"].endswith("3651c3a4")


def test_deny_by_default(client: FlaskClient) -> None:
    status, body = post(client, auth_body(SOCKET_ID, "private-foobar"))
    assert status == 403 and "@pusher.auth" in body["error"]


def test_callback_refusal(client: FlaskClient, pusher: Pusher) -> None:
    seen = []

    @pusher.auth
    def only_mine(channel_name: str, socket_id: str) -> bool:
        seen.append((channel_name, socket_id))
        return channel_name == "private-mine"

    assert post(client, auth_body(SOCKET_ID, "private-mine"))[0] == 200
    assert post(client, auth_body(SOCKET_ID, "private-yours"))[0] == 403
    assert seen == [("private-mine", SOCKET_ID), ("private-yours", SOCKET_ID)]


def test_async_callbacks(client: FlaskClient, pusher: Pusher) -> None:
    @pusher.auth
    async def allowed(channel_name: str, socket_id: str) -> bool:
        return True

    @pusher.channel_data
    async def member(channel_name: str, socket_id: str) -> dict[str, Any]:
        return {"user_id": "async"}

    status, body = post(client, auth_body(SOCKET_ID, "presence-x"))
    assert status == 200 and json.loads(body["channel_data"]) == {"user_id": "async"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("channel_name=private-x", "socket_id"),
        (auth_body("1.2\n", "private-x"), "socket_id"),
        (auth_body("abc", "private-x"), "socket_id"),
        (auth_body("\u0661.\u0661", "private-x"), "socket_id"),  # Arabic-Indic digits
        ("socket_id=1.2", "channel_name"),
        (auth_body("1.2", "public-room"), "private- and presence-"),
        (auth_body("1.2", "#server-to-user-1"), "channel_name"),
        (auth_body("1.2", "private-" + "x" * 200), "channel_name"),
        (auth_body("1.2", "private-a b"), "channel_name"),
    ],
)
def test_malformed_requests_get_400(
    client: FlaskClient, allow_all: Pusher, body: str, message: str
) -> None:
    status, answer = post(client, body)
    assert status == 400 and message in answer["error"]


def test_non_object_json_is_400(client: FlaskClient, allow_all: Pusher) -> None:
    r = client.post("/pusher/auth", data="[1]", content_type="application/json")
    assert r.status_code == 400 and "object" in json_body(r)["error"]


def test_other_methods_get_a_json_405(client: FlaskClient) -> None:
    r = client.get("/pusher/auth")
    assert r.status_code == 405 and "error" in json_body(r)
    assert set(r.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


def test_a_multipart_part_without_a_name_is_ignored(client: FlaskClient, allow_all: Pusher) -> None:
    # Werkzeug files a part without a name under the key None (issue 7: it answered 500).
    parts = [
        b'Content-Disposition: form-data; name="socket_id"\r\n\r\n1.2',
        b"Content-Disposition: form-data\r\n\r\nno name",
        b'Content-Disposition: form-data; name="channel_name[0]"\r\n\r\nprivate-a',
    ]
    body = b"".join(b"--x\r\n" + part + b"\r\n" for part in parts) + b"--x--\r\n"
    r = client.post("/pusher/auth", data=body, content_type="multipart/form-data; boundary=x")
    assert r.status_code == 200
    assert json_body(r)["private-a"]["status"] == 200


def test_errors_can_be_handled_by_the_app(app: Flask, client: FlaskClient) -> None:
    @app.errorhandler(ChannelAuthorizationDenied)
    def denied(error: ChannelAuthorizationDenied) -> tuple[dict[str, Any], int]:
        return {"custom": error.description}, 403

    status, body = post(client, auth_body(SOCKET_ID, "private-foobar"))
    assert status == 403 and "custom" in body


# --- batch requests from pusher-js-auth (reference §2) ------------------------------


def test_batch_as_pusher_js_auth_sends_it(client: FlaskClient, pusher: Pusher) -> None:
    pusher.auth(lambda channel_name, socket_id: channel_name != "private-forbidden")
    pusher.channel_data(lambda channel_name, socket_id: {"user_id": "u1"})
    status, body = post(client, PUSHER_JS_AUTH_BODY)
    assert status == 200
    assert set(body) == {"private-a", "private-b", "presence-c", "private-forbidden"}
    sid = "870423868.36814378"
    assert body["private-a"] == {
        "status": 200,
        "data": {"auth": f"{KEY}:{hmac_hex(sid + ':private-a')}"},
    }
    presence = body["presence-c"]["data"]
    assert presence["channel_data"] == '{"user_id": "u1"}'
    assert presence["auth"] == f"{KEY}:{hmac_hex(sid + ':presence-c:' + presence['channel_data'])}"
    assert body["private-forbidden"]["status"] == 403  # a number, not "403"


def test_batch_channels_fail_alone(client: FlaskClient, allow_all: Pusher) -> None:
    names = ["private-ok", "public", "private-bad name", "private-encrypted-e", "private-ok"]
    status, body = post(client, batch_auth_body("1.2", names))
    assert status == 200
    assert {name: result["status"] for name, result in body.items()} == {
        "private-ok": 200,
        "public": 400,
        "private-bad name": 400,
        "private-encrypted-e": 200,
    }
    assert isinstance(body["private-encrypted-e"]["data"]["shared_secret"], str)


def test_batch_orders_indexes_numerically(client: FlaskClient, pusher: Pusher) -> None:
    seen: list[str] = []

    @pusher.auth
    def allow_and_record(channel_name: str, socket_id: str) -> bool:
        seen.append(channel_name)
        return True

    body = "&socket_id=1.2&channel_name[10]=private-k&channel_name[2]=private-c"
    assert set(post(client, body)[1]) == {"private-c", "private-k"}
    assert seen == ["private-c", "private-k"]


def test_batch_repeated_name_is_answered_once(client: FlaskClient, pusher: Pusher) -> None:
    calls: list[str] = []

    @pusher.auth
    def allow_and_record(channel_name: str, socket_id: str) -> bool:
        calls.append(channel_name)
        return True

    status, body = post(client, batch_auth_body("1.2", ["private-a"] * 50))
    assert status == 200 and list(body) == ["private-a"] and calls == ["private-a"]


def test_batch_cap(app: Flask) -> None:
    pusher = Pusher(app, auth_batch_limit=3)
    pusher.auth(lambda channel_name, socket_id: True)
    client = app.test_client()
    assert post(client, batch_auth_body("1.2", [f"private-{i}" for i in range(3)]))[0] == 200
    status, body = post(client, batch_auth_body("1.2", [f"private-{i}" for i in range(4)]))
    assert status == 400 and "PUSHER_AUTH_BATCH_LIMIT" in body["error"]


def test_batch_without_a_socket_id_is_400(client: FlaskClient, allow_all: Pusher) -> None:
    assert post(client, "&channel_name[0]=private-a")[0] == 400


# --- JSONP (reference §1.2) -----------------------------------------------------------


def test_jsonp_is_off_by_default(client: FlaskClient, allow_all: Pusher) -> None:
    r = client.get("/pusher/auth?callback=cb&socket_id=1.2&channel_name=private-a")
    assert r.status_code == 405


def test_jsonp(app: Flask) -> None:
    pusher = Pusher(app, auth_jsonp=True)
    pusher.auth(lambda channel_name, socket_id: True)
    client = app.test_client()
    callback = "Pusher.auth_callbacks['1']"
    r = client.get(
        "/pusher/auth",
        query_string={
            "callback": callback,
            "socket_id": SOCKET_ID,
            "channel_name": "private-foobar",
        },
    )
    assert r.status_code == 200 and r.mimetype == "text/javascript"
    text = r.get_data(as_text=True)
    assert text.startswith(callback + "(") and text.endswith(");")
    assert json.loads(text[len(callback) + 1 : -2])["auth"].endswith("3651c3a4")


@pytest.mark.parametrize("callback", ["", "alert(1)//", "a;b", "x</script>", "a" * 100])
def test_jsonp_callback_is_validated(app: Flask, callback: str) -> None:
    pusher = Pusher(app, auth_jsonp=True)
    pusher.auth(lambda channel_name, socket_id: True)
    r = app.test_client().get(
        "/pusher/auth",
        query_string={"callback": callback, "socket_id": "1.2", "channel_name": "private-a"},
    )
    assert r.status_code == 400 and "callback" in json_body(r)["error"]
