"""To others: the page's socket id in ``X-Socket-ID`` (Laravel Echo's convention) is
left out of ``trigger(..., to_others=True)`` (reference §4.2 ``socket_id``, §5.3)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from flask import Flask
from flask import render_template_string
from flask import request

from flask_pusher import Pusher
from flask_pusher.testing import record_events


@pytest.fixture
def views(app: Flask, pusher: Pusher) -> Flask:
    @app.post("/say")
    def say() -> str:
        pusher.trigger("chat", "message", {"text": "hi"}, to_others=True)
        return ""

    @app.post("/batch")
    def batch() -> str:
        pusher.trigger_batch(
            [
                {"channel": "chat", "name": "a", "data": 1},
                {"channel": "chat", "name": "b", "data": 2, "socket_id": "9.9"},
            ],
            to_others=True,
        )
        return ""

    return app


def excluded(app: Flask, path: str, headers: dict[str, str]) -> list[Any]:
    with record_events(app) as events:
        assert app.test_client().post(path, headers=headers).status_code == 200
    return [event.socket_id for event in events]


@pytest.mark.parametrize(
    ("headers", "socket_id"),
    [
        ({"X-Socket-ID": "123.456"}, "123.456"),
        ({"x-socket-id": "1.2"}, "1.2"),
        ({}, None),
        ({"X-Socket-ID": ""}, None),
        ({"X-Socket-ID": "123"}, None),
        ({"X-Socket-ID": "1.2:evil"}, None),
        ({"X-Socket-ID": "\u0661.\u0662"}, None),  # Arabic-Indic digits
    ],
)
def test_trigger_leaves_out_the_header_socket_id(
    views: Flask, headers: dict[str, str], socket_id: str | None
) -> None:
    assert excluded(views, "/say", headers) == [socket_id]


def test_an_invalid_header_is_ignored_and_logged_at_debug(
    views: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "flask_pusher")
    assert excluded(views, "/say", {"X-Socket-ID": "nope"}) == [None]
    assert "Ignored an invalid X-Socket-ID header: 'nope'" in caplog.text


def test_trigger_batch_sets_the_socket_id_it_is_not_given(views: Flask) -> None:
    assert excluded(views, "/batch", {"X-Socket-ID": "1.2"}) == ["1.2", "9.9"]
    assert excluded(views, "/batch", {}) == [None, "9.9"]


def test_outside_a_request_nothing_is_left_out(app: Flask, pusher: Pusher) -> None:
    with record_events(app) as events, app.app_context():
        pusher.trigger("chat", "e", 1, to_others=True)
    assert events[0].socket_id is None


def test_socket_id_and_to_others_together_is_an_error(app: Flask, pusher: Pusher) -> None:
    with app.test_request_context(), pytest.raises(ValueError, match="not both"):
        pusher.trigger("chat", "e", 1, "1.2", to_others=True)


def test_without_to_others_the_header_changes_nothing(app: Flask, pusher: Pusher) -> None:
    @app.post("/all")
    def everyone() -> str:
        pusher.trigger("chat", "e", 1)
        return request.headers["X-Socket-ID"]

    assert excluded(app, "/all", {"X-Socket-ID": "1.2"}) == [None]


def test_pusher_script_serves_pusher_js_and_the_helper(app: Flask, pusher: Pusher) -> None:
    with app.test_request_context():
        html = render_template_string("{{ pusher_script() }}|{{ pusher_script(pusher_js=False) }}")
    everything, helper_only = html.split("|")
    sources = re.findall(r'<script src="([^"]+)"></script>', everything)
    assert sources == [
        "/pusher/static/pusher-with-encryption.min.js",
        "/pusher/static/flask-pusher.js",
    ]
    assert helper_only == '<script src="/pusher/static/flask-pusher.js"></script>'
    client = app.test_client()
    with client.get(sources[0]) as pusher_js:
        assert pusher_js.status_code == 200 and pusher_js.mimetype == "text/javascript"
        assert pusher_js.data.startswith(b"/*! For license information please see")
        assert b'"8.6.0"' in pusher_js.data
    with client.get("/pusher/static/pusher-with-encryption.min.js.LICENSE.txt") as licence:
        assert b"Pusher JavaScript Library v8.6.0" in licence.data
    with client.get(sources[1]) as helper:
        assert b"X-Socket-ID" in helper.data
    missing = client.get("/pusher/static/nothing.js")
    assert missing.status_code == 404 and missing.is_json


def test_with_no_url_prefix_the_files_do_not_hide_behind_the_apps_static_route() -> None:
    app = Flask(__name__)  # has its own /static/<filename>
    app.config.update(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s", PUSHER_URL_PREFIX="")
    Pusher(app)
    with app.test_request_context():
        html = render_template_string("{{ pusher_script(pusher_js=False) }}")
    assert html == '<script src="/pusher-static/flask-pusher.js"></script>'
    with app.test_client().get("/pusher-static/flask-pusher.js") as response:
        assert response.status_code == 200
