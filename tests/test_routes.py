"""The extension's routes take POST only (and GET for JSONP); every other method gets a
JSON 405 with ``Allow`` (issue 10 item 5, issue 7's hostile input)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.cli import routes_command
from flask.testing import FlaskClient
from flask_wtf.csrf import CSRFProtect

from flask_pusher import Pusher

PATHS = ["/pusher/auth", "/pusher/user-auth", "/pusher/events", "/pusher/events/presence"]
OTHER_METHODS = ["GET", "PUT", "PATCH", "DELETE", "TRACE", "PROPFIND", "MKCOL", "BREW"]


def methods_of(app: Flask) -> dict[str, set[str]]:
    return {
        rule.endpoint: set(rule.methods or ())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("pusher.")
    }


def test_routes_are_registered_for_post_only(app: Flask, pusher: Pusher) -> None:
    assert methods_of(app) == {
        "pusher.static": {"GET", "HEAD", "OPTIONS"},  # pusher-js and flask-pusher.js
        "pusher.auth": {"POST", "OPTIONS"},
        "pusher.user_auth": {"POST", "OPTIONS"},
        "pusher.webhooks": {"POST", "OPTIONS"},
        "pusher.webhooks_group": {"POST", "OPTIONS"},
    }
    result = app.test_cli_runner().invoke(routes_command)
    lines = [line.split() for line in result.output.splitlines() if line.startswith("pusher.")]
    assert [(line[0], line[1]) for line in lines] == [
        ("pusher.auth", "POST"),
        ("pusher.static", "GET"),
        ("pusher.user_auth", "POST"),
        ("pusher.webhooks", "POST"),
        ("pusher.webhooks_group", "POST"),
    ]


def test_the_auth_route_takes_get_too_with_jsonp(app: Flask) -> None:
    Pusher(app, auth_jsonp=True)
    assert methods_of(app)["pusher.auth"] == {"GET", "HEAD", "POST", "OPTIONS"}
    assert methods_of(app)["pusher.user_auth"] == {"POST", "OPTIONS"}
    r = app.test_client().open("/pusher/auth", method="TRACE")
    assert r.status_code == 405 and r.is_json
    assert set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}


def test_the_static_route_answers_other_methods_with_a_json_405(client: FlaskClient) -> None:
    r = client.post("/pusher/static/flask-pusher.js")
    assert r.status_code == 405 and r.is_json
    assert set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


@pytest.mark.parametrize("method", OTHER_METHODS)
@pytest.mark.parametrize("path", PATHS)
def test_other_methods_get_a_json_405_with_allow(
    client: FlaskClient, path: str, method: str
) -> None:
    r = client.open(path, method=method)
    assert r.status_code == 405
    assert r.mimetype == "application/json"
    assert r.json == {"error": "The method is not allowed for the requested URL."}
    assert set(r.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


def test_the_405_comes_before_csrfprotect(app: Flask, pusher: Pusher) -> None:
    app.config["SECRET_KEY"] = "test"
    CSRFProtect(app)
    r = app.test_client().put("/pusher/auth")
    assert r.status_code == 405 and r.is_json


def test_the_apps_own_routes_keep_their_405(app: Flask, pusher: Pusher) -> None:
    app.add_url_rule("/page", "page", lambda: "page")
    r = app.test_client().open("/page", method="PROPFIND")
    assert r.status_code == 405 and r.mimetype == "text/html"


@pytest.mark.parametrize("path", ["/pusher", "/pusher/", "/pusher/events/bogus", "/pusher/x/y"])
def test_unknown_paths_under_the_prefix_get_a_json_404(client: FlaskClient, path: str) -> None:
    r = client.post(path)
    assert r.status_code == 404 and r.is_json
    assert "No Pusher route" in r.get_json()["error"]


def test_the_apps_own_404s_are_left_alone(client: FlaskClient) -> None:
    for path in ("/elsewhere", "/pusherish"):
        r = client.get(path)
        assert r.status_code == 404 and not r.is_json
