"""Sending after the response: ``trigger(..., defer=True)`` and ``PUSHER_DEFER``,
against the real local server (reference §4.2: batch_events, at most 10 events)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask import request

from flask_pusher import Pusher
from flask_pusher.server import LocalServer
from flask_pusher.testing import record_events

from .listener import Listener


class RequestLog:
    """Wraps the client's HTTP backend: the paths of the requests it really sends."""

    def __init__(self, pusher: Pusher, app: Flask) -> None:
        with app.app_context():
            self.http = pusher.client._pusher_client.http
        self.paths: list[str] = []
        self._send = self.http.send_request
        self.http.send_request = self.send_request

    def send_request(self, req: Any) -> Any:
        self.paths.append(req.path.rsplit("/", 1)[-1])
        return self._send(req)


@pytest.fixture
def app(pusher_app: Flask) -> Flask:
    pusher: Pusher = pusher_app.extensions["pusher"]

    @pusher_app.post("/order")
    def order() -> tuple[dict[str, Any], int]:
        body = request.get_json()
        for n in range(body.get("count", 3)):
            pusher.trigger(
                body.get("channels", "orders"), "step", {"n": n}, defer=body.get("defer")
            )
        if body.get("fail") == "raise":
            raise RuntimeError("the view failed")
        return {}, body.get("status", 200)

    return pusher_app


@pytest.fixture
def pusher(app: Flask) -> Pusher:
    ext: Pusher = app.extensions["pusher"]
    return ext


@pytest.fixture
def sent(app: Flask, pusher: Pusher) -> RequestLog:
    return RequestLog(pusher, app)


@pytest.fixture
def listener(pusher_server: LocalServer) -> Iterator[Listener]:
    with Listener(pusher_server, ["orders", "audit"]) as running:
        yield running


def test_deferred_events_leave_after_the_response_in_one_batch(
    app: Flask, sent: RequestLog, listener: Listener
) -> None:
    response = app.test_client().post("/order", json={"defer": True})
    assert response.status_code == 200
    assert sent.paths == []  # the client has its response; nothing sent yet
    response.close()  # the WSGI server closes the response once it is sent
    assert sent.paths == ["batch_events"]
    assert listener.take(3) == [("orders", "step", {"n": n}) for n in range(3)]


def test_without_defer_each_trigger_is_a_request(
    app: Flask, sent: RequestLog, listener: Listener
) -> None:
    app.test_client().post("/order", json={}).close()
    assert sent.paths == ["events"] * 3
    assert listener.take(3) == [("orders", "step", {"n": n}) for n in range(3)]


def test_batches_hold_at_most_10_events_in_order(
    app: Flask, sent: RequestLog, listener: Listener
) -> None:
    app.test_client().post("/order", json={"defer": True, "count": 12}).close()
    assert sent.paths == ["batch_events", "batch_events"]
    assert listener.take(12) == [("orders", "step", {"n": n}) for n in range(12)]


def test_an_event_on_two_channels_is_one_batch_item_per_channel(
    app: Flask, sent: RequestLog, listener: Listener
) -> None:
    app.test_client().post(
        "/order", json={"defer": True, "count": 1, "channels": ["orders", "audit"]}
    ).close()
    assert sent.paths == ["batch_events"]
    assert sorted(listener.take(2)) == [("audit", "step", {"n": 0}), ("orders", "step", {"n": 0})]


def test_deferred_batches_and_triggers_share_requests(
    app: Flask, pusher: Pusher, sent: RequestLog, listener: Listener
) -> None:
    @app.post("/batch")
    def batch() -> str:
        pusher.trigger_batch(
            [
                {"channel": "orders", "name": "a", "data": 1},
                {"channel": "audit", "name": "b", "data": 2},
            ],
            defer=True,
        )
        pusher.trigger("orders", "c", 3, defer=True)
        return ""

    app.test_client().post("/batch").close()
    assert sent.paths == ["batch_events"]
    events = listener.take(3)
    assert [e for e in events if e[0] == "orders"] == [("orders", "a", 1), ("orders", "c", 3)]
    assert ("audit", "b", 2) in events


def test_pusher_defer_makes_it_the_default(
    pusher_config: dict[str, Any], listener: Listener
) -> None:
    app = Flask(__name__)
    app.config.update(pusher_config, PUSHER_DEFER="true")
    pusher = Pusher(app)

    @app.post("/")
    def view() -> str:
        pusher.trigger("orders", "deferred", 1)
        pusher.trigger("audit", "at-once", 2, defer=False)
        return ""

    sent = RequestLog(pusher, app)
    response = app.test_client().post("/")
    assert sent.paths == ["events"]
    response.close()
    assert sent.paths == ["events", "batch_events"]
    assert listener.take(2) == [("audit", "at-once", 2), ("orders", "deferred", 1)]


@pytest.mark.parametrize(
    "body", [{"status": 500}, {"status": 503}, {"fail": "raise"}], ids=["500", "503", "raise"]
)
@pytest.mark.parametrize("propagate", [True, False], ids=["propagate", "handled"])
def test_a_failed_view_drops_its_deferred_events(
    app: Flask,
    sent: RequestLog,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, Any],
    propagate: bool,
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = propagate
    caplog.set_level(logging.INFO, "flask_pusher")
    try:
        response = app.test_client().post("/order", json={"defer": True, **body})
    except RuntimeError:
        assert propagate and body == {"fail": "raise"}
    else:
        assert response.status_code >= 500
        response.close()
    assert sent.paths == []
    assert "Dropped 3 deferred Pusher event(s)" in caplog.text


def test_a_4xx_answer_still_sends(app: Flask, sent: RequestLog, listener: Listener) -> None:
    app.test_client().post("/order", json={"defer": True, "count": 1, "status": 409}).close()
    assert sent.paths == ["batch_events"]
    assert listener.take(1) == [("orders", "step", {"n": 0})]


def test_outside_a_request_defer_sends_at_once(
    app: Flask, pusher: Pusher, sent: RequestLog, listener: Listener
) -> None:
    with app.app_context():
        assert pusher.trigger("orders", "now", 1, defer=True) == {}
    assert sent.paths == ["events"]
    assert listener.take(1) == [("orders", "now", 1)]


def test_a_failed_send_is_logged_with_pushers_answer(
    pusher_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask(__name__)
    app.config.update(pusher_config, PUSHER_SECRET="not-the-secret")
    pusher = Pusher(app)

    @app.post("/")
    def view() -> str:
        pusher.trigger("orders", "lost", 1, defer=True)
        return "ok"

    response = app.test_client().post("/")
    response.close()
    assert response.get_data() == b"ok"
    [record] = [r for r in caplog.records if r.name == "flask_pusher"]
    assert record.levelno == logging.ERROR
    assert "lost on orders" in record.getMessage()
    assert "PusherBadAuth" in record.getMessage()
    assert "signature" in record.getMessage().lower()  # the server's own words


def test_record_events_tells_deferred_events_apart(app: Flask, pusher: Pusher) -> None:
    @app.post("/mixed")
    def mixed() -> str:
        pusher.trigger("orders", "later", 1, defer=True)
        pusher.trigger(["orders", "audit"], "now", 2)
        return ""

    with record_events(app) as events:
        app.test_client().post("/mixed")
        app.test_client().post("/order", json={"defer": True, "status": 500})
    assert [(e.channels, e.name, e.json, e.deferred) for e in events] == [
        (("orders", "audit"), "now", 2, False),
        (("orders",), "later", 1, True),
    ]


def test_to_others_survives_deferral(app: Flask, pusher: Pusher) -> None:
    @app.post("/others")
    def others() -> str:
        pusher.trigger("orders", "mine", 1, to_others=True, defer=True)
        return ""

    with record_events(app) as events:
        app.test_client().post("/others", headers={"X-Socket-ID": "123.456"})
    assert [(e.socket_id, e.deferred) for e in events] == [("123.456", True)]
