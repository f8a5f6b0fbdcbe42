"""Webhooks: verification, dispatch and answers (reference §3)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pusher as pusher_http
import pytest
from flask import Flask
from flask import request
from flask.testing import FlaskClient

from flask_pusher import Pusher
from flask_pusher import views
from flask_pusher.testing import webhook_request
from flask_pusher.webhooks import GROUPS

from .conftest import APP_ID
from .conftest import json_body
from .conftest import KEY
from .conftest import SECRET

#: One event of each of the seven types (reference §3.2).
EVENTS: list[dict[str, Any]] = [
    {"name": "channel_occupied", "channel": "c"},
    {"name": "channel_vacated", "channel": "c"},
    {"name": "member_added", "channel": "presence-p", "user_id": "u1"},
    {"name": "member_removed", "channel": "presence-p", "user_id": "u1"},
    {
        "name": "client_event",
        "channel": "presence-p",
        "event": "client-typing",
        "data": '{"on":true}',
        "socket_id": "1.2",
        "user_id": "u1",
    },
    {"name": "cache_miss", "channel": "cache-c"},
    {"name": "subscription_count", "channel": "c", "subscription_count": 5},
]


def send(
    client: FlaskClient, body: bytes, headers: dict[str, str], path: str = "/pusher/events"
) -> tuple[int, dict[str, Any]]:
    r = client.post(path, data=body, headers=headers)
    assert r.content_type == "application/json"
    return r.status_code, json_body(r)


def official() -> pusher_http.Pusher:
    return pusher_http.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)


def test_every_event_reaches_its_handlers_in_order(
    app: Flask, client: FlaskClient, pusher: Pusher
) -> None:
    seen: list[tuple[str, str]] = []
    for event in EVENTS:
        pusher.webhooks.on(event["name"])(lambda e, tag="first": seen.append((tag, e["name"])))
    pusher.webhooks.on("member_added")(lambda e: seen.append(("second", e["user_id"])))
    with app.app_context():
        req = webhook_request(EVENTS)
    assert send(client, *req) == (200, {})
    assert seen[:4] == [
        ("first", "channel_occupied"),
        ("first", "channel_vacated"),
        ("first", "member_added"),
        ("second", "u1"),
    ]
    assert [name for tag, name in seen if tag == "first"] == [e["name"] for e in EVENTS]


def test_group_handlers_run_once_per_request_in_the_request_context(
    app: Flask, client: FlaskClient, pusher: Pusher
) -> None:
    runs: list[tuple[str, list[str]]] = []
    for group in GROUPS:
        getattr(pusher.webhooks, group)(
            lambda group=group: runs.append((group, [e["name"] for e in request.json["events"]]))
        )
    with app.app_context():
        req = webhook_request(EVENTS[2:4])  # member_added and member_removed
    assert send(client, *req)[0] == 200
    assert runs == [("presence", ["member_added", "member_removed"])]


def test_payload_is_available_to_handlers(app: Flask, client: FlaskClient, pusher: Pusher) -> None:
    payloads = []
    pusher.webhooks.client(lambda: payloads.append(pusher.webhooks.payload))
    with app.app_context():
        req = webhook_request([EVENTS[4]], time_ms=int(time.time() * 1000))
    send(client, *req)
    assert payloads[0]["events"] == [EVENTS[4]]


@pytest.mark.parametrize("group", list(GROUPS))
def test_per_type_urls(app: Flask, client: FlaskClient, pusher: Pusher, group: str) -> None:
    seen = []
    getattr(pusher.webhooks, group)(lambda: seen.append(group))
    events = [e for e in EVENTS if e["name"] in GROUPS[group]]
    with app.app_context():
        req = webhook_request(events)
    assert send(client, *req, path=f"/pusher/events/{group}")[0] == 200
    assert seen == [group]


def test_verified_without_handlers_is_200(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        assert send(client, *webhook_request(EVENTS))[0] == 200


def test_async_handler(app: Flask, client: FlaskClient, pusher: Pusher) -> None:
    seen = []

    @pusher.webhooks.on("channel_occupied")
    async def occupied(event: dict[str, Any]) -> None:
        seen.append(event["channel"])

    with app.app_context():
        send(client, *webhook_request(EVENTS[:1]))
    assert seen == ["c"]


def test_a_failing_handler_answers_500_and_logs(
    app: Flask, client: FlaskClient, pusher: Pusher, caplog: pytest.LogCaptureFixture
) -> None:
    @pusher.webhooks.on("channel_occupied")
    def broken(event: dict[str, Any]) -> None:
        raise KeyError("boom")

    with app.app_context():
        status, body = send(client, *webhook_request(EVENTS[:1]))
    assert status == 500 and "retried" in body["error"]
    assert "webhook handler raised" in caplog.text and "boom" in caplog.text


def test_unknown_event_name_cannot_be_registered(pusher: Pusher) -> None:
    with pytest.raises(ValueError, match="member_added"):
        pusher.webhooks.on("member_joined")


def signed(body: str) -> dict[str, str]:
    from pusher.signature import sign

    return {
        "X-Pusher-Key": KEY,
        "X-Pusher-Signature": sign(SECRET, body),
        "Content-Type": "application/json",
    }


def fresh_body(**extra: Any) -> str:
    return json.dumps({"time_ms": int(time.time() * 1000), "events": EVENTS[:1], **extra})


@pytest.mark.parametrize(
    "case",
    [
        "signed",
        "tampered",
        "stale",
        "future",
        "seconds",
        "wrong-key",
        "wrong-signature",
        "upper-case",
    ],
)
def test_agrees_with_the_official_validate_webhook(client: FlaskClient, case: str) -> None:
    now_ms = int(time.time() * 1000)
    body = fresh_body()
    headers = signed(body)
    if case == "tampered":
        body = body.replace('"c"', '"d"')
    elif case == "stale":
        body = json.dumps({"time_ms": now_ms - 301_000, "events": EVENTS[:1]})
        headers = signed(body)
    elif case == "future":
        body = json.dumps({"time_ms": now_ms + 301_000, "events": EVENTS[:1]})
        headers = signed(body)
    elif case == "seconds":  # pusher-fake's time_ms (reference servers §2)
        body = json.dumps({"time_ms": now_ms // 1000, "events": EVENTS[:1]})
        headers = signed(body)
    elif case == "wrong-key":
        headers["X-Pusher-Key"] = "other-key"
    elif case == "wrong-signature":
        headers["X-Pusher-Signature"] = "0" * 64
    elif case == "upper-case":
        headers["X-Pusher-Signature"] = headers["X-Pusher-Signature"].upper()
    valid = official().validate_webhook(
        headers["X-Pusher-Key"], headers["X-Pusher-Signature"], body
    )
    status, answer = send(client, body.encode(), headers)
    assert (status == 200) == (valid is not None)
    assert status in (200, 401), answer


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "X-Pusher-Key"),
        ({"X-Pusher-Key": KEY}, "X-Pusher-Signature"),
        ({"X-Pusher-Key": "", "X-Pusher-Signature": "x"}, "X-Pusher-Key"),
    ],
)
def test_missing_headers_are_401(
    client: FlaskClient, headers: dict[str, str], message: str
) -> None:
    status, body = send(client, fresh_body().encode(), headers)
    assert status == 401 and message in body["error"]


def test_a_refused_webhook_logs_a_warning_with_the_reason(
    app: Flask,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 10 item 5: the access log alone showed "401", not why.
    with app.app_context():
        req = webhook_request(EVENTS[:1], time_ms=0)
    status, _ = send(client, req.body, req.headers)
    assert status == 401
    stale = [r for r in caplog.records if r.name == app.logger.name]
    assert [r.levelname for r in stale] == ["WARNING"]
    assert "Refused a Pusher webhook (401)" in stale[0].getMessage()
    assert "time_ms" in stale[0].getMessage()
    # Anyone can send refused webhooks: the next ones within the interval are DEBUG
    # lines, counted in the next warning.
    caplog.clear()
    caplog.set_level(logging.DEBUG, app.logger.name)
    forged = {**req.headers, "X-Pusher-Signature": "0" * 64}
    for _ in range(3):
        status, _ = send(client, req.body, forged)
        assert status == 401
    refused = [r for r in caplog.records if r.name == app.logger.name]
    assert [r.levelname for r in refused] == ["DEBUG"] * 3
    assert "does not match the body" in refused[0].getMessage()
    caplog.clear()
    monkeypatch.setattr(views, "REFUSAL_LOG_INTERVAL", 0.0)
    send(client, req.body, forged)
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "(3 more refused since the last warning)" in warning.getMessage()


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"events": []}',
        '{"time_ms": "soon", "events": []}',
        '{"time_ms": NaN, "events": []}',
        '{"time_ms": 1e400, "events": []}',
        json.dumps({"time_ms": 1, "events": "x"}),
        json.dumps({"time_ms": 1, "events": [{"channel": "c"}]}),
        json.dumps({"time_ms": 1, "events": [1]}),
    ],
)
def test_malformed_signed_bodies_are_400(client: FlaskClient, body: str) -> None:
    status, answer = send(client, body.encode(), signed(body))
    assert status == 400, answer


@pytest.mark.parametrize("time_ms", ["1" + "0" * 400, "-" + "9" * 400, "1e308"])
def test_absurd_time_ms_is_stale_not_a_crash(client: FlaskClient, time_ms: str) -> None:
    body = '{"time_ms": ' + time_ms + ', "events": []}'
    status, answer = send(client, body.encode(), signed(body))
    assert status == 401 and "time_ms" in answer["error"]


def test_non_utf8_body_is_401(client: FlaskClient) -> None:
    status, _ = send(client, b"\xff\xfe", {"X-Pusher-Key": KEY, "X-Pusher-Signature": "0" * 64})
    assert status == 401


def test_tolerance_is_configurable(app: Flask) -> None:
    Pusher(app, webhook_tolerance=1000)
    body = json.dumps({"time_ms": int(time.time() * 1000) - 900_000, "events": []})
    assert send(app.test_client(), body.encode(), signed(body))[0] == 200


@pytest.mark.parametrize("csrf_first", [True, False])
def test_webhooks_pass_csrfprotect_whichever_is_initialised_first(csrf_first: bool) -> None:
    from flask_wtf.csrf import CSRFProtect

    app = Flask(__name__)
    app.config.update(SECRET_KEY="dev", PUSHER_APP_ID=APP_ID, PUSHER_KEY=KEY, PUSHER_SECRET=SECRET)
    csrf = CSRFProtect()
    pusher = Pusher()
    if csrf_first:
        csrf.init_app(app)
        pusher.init_app(app)
    else:
        pusher.init_app(app)
        csrf.init_app(app)
    pusher.auth(lambda channel_name, socket_id: True)

    @app.post("/form")
    def form() -> str:
        return "ok"

    client = app.test_client()
    body = fresh_body()
    assert client.post("/pusher/events", data=body, headers=signed(body)).status_code == 200
    # CSRF still protects the app's own routes and the auth route.
    assert client.post("/form").status_code == 400
    assert (
        client.post(
            "/pusher/auth", data={"socket_id": "1.2", "channel_name": "private-a"}
        ).status_code
        == 400
    )
