"""The extension: init_app, many apps, the client, forwarding, JSON, templates."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import inspect
import json
import uuid
from typing import Any

import pusher as pusher_http
import pytest
import responses
from flask import current_app
from flask import Flask
from flask import render_template_string
from nacl.secret import SecretBox
from pusher.crypto import generate_shared_secret

from flask_pusher import Pusher

from .conftest import APP_ID
from .conftest import json_body
from .conftest import KEY
from .conftest import MASTER_KEY

API = "https://api.pusherapp.com:443"


def test_factory_pattern() -> None:
    pusher = Pusher()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config.update(PUSHER_APP_ID="1", PUSHER_KEY="k", PUSHER_SECRET="s")
        pusher.init_app(app)
        return app

    app = create_app()
    assert app.extensions["pusher"] is pusher
    assert "pusher.auth" in app.view_functions
    with app.app_context():
        assert current_app.extensions["pusher"].client.key == "k"


def test_one_extension_serves_two_apps_with_their_own_settings() -> None:
    pusher = Pusher()
    apps = []
    for n in ("1", "2"):
        app = Flask(__name__)
        app.config.update(PUSHER_APP_ID=n, PUSHER_KEY=f"key{n}", PUSHER_SECRET=f"secret{n}")
        pusher.init_app(app, url_prefix=f"/rt{n}")
        apps.append(app)
    pusher.auth(lambda channel, socket_id: True)
    for n, app in zip(("1", "2"), apps, strict=True):
        with app.app_context():
            assert pusher.client.app_id == n
            assert pusher.settings.secret == f"secret{n}"
        r = app.test_client().post(
            f"/rt{n}/auth", data={"socket_id": "1.1", "channel_name": "private-x"}
        )
        assert json_body(r)["auth"].startswith(f"key{n}:")


def test_second_init_app_on_the_same_app_raises(app: Flask, pusher: Pusher) -> None:
    with pytest.raises(RuntimeError, match="already registered"):
        pusher.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        Pusher(app)


def test_use_without_a_known_app_raises(app: Flask, pusher: Pusher) -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        _ = pusher.client
    other = Flask(__name__)
    with other.app_context(), pytest.raises(RuntimeError, match="init_app"):
        pusher.trigger("c", "e", {})


def test_client_is_an_official_pusher_client(app: Flask, pusher: Pusher) -> None:
    with app.app_context():
        assert isinstance(pusher.client, pusher_http.Pusher)
        assert current_app.extensions["pusher"] is pusher


def test_every_public_client_method_is_forwarded(app: Flask, pusher: Pusher) -> None:
    public = [
        name
        for name, member in inspect.getmembers(pusher_http.Pusher, inspect.isfunction)
        if not name.startswith("_")
    ]
    assert "trigger" in public and "terminate_user_connections" in public
    with app.app_context():
        for name in public:
            assert callable(getattr(pusher, name)), name


def test_no_attribute_forwarding(app: Flask, pusher: Pusher) -> None:
    """Every method is written out: a typo is an AttributeError, and hasattr is honest."""
    with app.app_context():
        assert not hasattr(pusher, "triger")
        with pytest.raises(AttributeError):
            pusher.from_url  # type: ignore[attr-defined]  # noqa: B018
    assert "__getattr__" not in vars(Pusher)


def test_forwarded_methods_take_the_official_arguments(pusher: Pusher) -> None:
    for name, member in inspect.getmembers(pusher_http.Pusher, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(Pusher, name)).parameters
        theirs = inspect.signature(member).parameters
        assert list(theirs) == list(ours)[: len(theirs)], name
        extra = list(ours)[len(theirs) :]
        assert all(ours[p].kind is inspect.Parameter.KEYWORD_ONLY for p in extra), name


def test_settings_are_readable_as_flaskpusher_offered_them(app: Flask) -> None:
    pusher = Pusher(app, host="example.com", port="8080", ssl="false", timeout=3)
    with app.app_context():
        assert (pusher.app_id, pusher.key, pusher.secret) == (
            APP_ID,
            KEY,
            app.config["PUSHER_SECRET"],
        )
        assert (pusher.host, pusher.port, pusher.ssl, pusher.timeout) == (
            "example.com",
            8080,
            False,
            3,
        )


def sent_body(call: responses.Call) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(call.request.body or "")
    return body


@responses.activate
def test_trigger_encodes_with_the_apps_json_provider(app: Flask, pusher: Pusher) -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    responses.post(f"{API}/apps/{APP_ID}/events", json={})
    data = {
        "price": decimal.Decimal("9.99"),
        "at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "id": uuid.UUID(int=1),
        "point": Point(1),
    }
    with app.app_context():
        pusher.trigger("channel", "my-event", data)
    sent = json.loads(sent_body(responses.calls[0])["data"])
    assert sent == json.loads(app.json.dumps(data))
    assert sent["price"] == "9.99" and sent["point"] == {"x": 1}


@responses.activate
def test_trigger_batch_and_send_to_user_encode_too(app: Flask, pusher: Pusher) -> None:
    responses.post(f"{API}/apps/{APP_ID}/batch_events", json={})
    responses.post(f"{API}/apps/{APP_ID}/events", json={})
    event = {"channel": "c", "name": "e", "data": {"n": decimal.Decimal("1.5")}}
    with app.app_context():
        pusher.trigger_batch([event])
        pusher.send_to_user("u1", "note", {"at": datetime.date(2026, 1, 1)})
    assert json.loads(sent_body(responses.calls[0])["batch"][0]["data"]) == {"n": "1.5"}
    assert event["data"] == {"n": decimal.Decimal("1.5")}  # the caller's dict is not changed
    body = sent_body(responses.calls[1])
    assert body["channels"] == ["#server-to-user-u1"]
    assert "2026" in json.loads(body["data"])["at"]


@responses.activate
def test_configured_json_encoder_is_used_instead(app: Flask) -> None:
    class Upper(json.JSONEncoder):
        def default(self, o: object) -> object:
            return "custom"

    pusher = Pusher(app, json_encoder=Upper)
    responses.post(f"{API}/apps/{APP_ID}/events", json={})
    with app.app_context():
        pusher.trigger("c", "e", {"x": object()})
    assert json.loads(sent_body(responses.calls[0])["data"]) == {"x": "custom"}


@responses.activate
def test_terminate_user_connections_reaches_the_documented_path(app: Flask, pusher: Pusher) -> None:
    # pusher-http-python 3.3.4 posts to /users/{id}/... without /apps/{id} (reference §4.6).
    responses.post(f"{API}/apps/{APP_ID}/users/u-7/terminate_connections", json={})
    with app.app_context():
        assert pusher.terminate_user_connections("u-7") == {}
        assert pusher.client.terminate_user_connections("u-7") == {}
    assert len(responses.calls) == 2
    assert "auth_signature=" in (responses.calls[0].request.url or "")


@responses.activate
def test_encrypted_trigger_decrypts_with_the_shared_secret(app: Flask, pusher: Pusher) -> None:
    responses.post(f"{API}/apps/{APP_ID}/events", json={})
    with app.app_context():
        pusher.trigger("private-encrypted-room", "secret", {"text": "hi"})
        auth = pusher.authenticate("private-encrypted-room", "1.1")
    payload = json.loads(sent_body(responses.calls[0])["data"])
    import base64

    box = SecretBox(base64.b64decode(auth["shared_secret"]))
    plain = box.decrypt(base64.b64decode(payload["ciphertext"]), base64.b64decode(payload["nonce"]))
    assert json.loads(plain) == {"text": "hi"}
    expected = generate_shared_secret(b"private-encrypted-room", base64.b64decode(MASTER_KEY))
    assert base64.b64decode(auth["shared_secret"]) == expected


def test_template_helper_for_hosted_pusher(app: Flask, pusher: Pusher) -> None:
    app.config["SERVER_NAME"] = "example.test"
    with app.test_request_context():
        html = render_template_string(
            "new Pusher({{ PUSHER_KEY|tojson }}, {{ pusher_options() }});"
        )
    key, options = html[len("new Pusher(") : -2].split(", ", 1)
    assert json.loads(key) == KEY
    opts = json.loads(options)
    assert opts["cluster"] == "mt1" and opts["forceTLS"] is True
    assert "wsHost" not in opts
    assert opts["channelAuthorization"] == {"endpoint": "/pusher/auth", "transport": "ajax"}
    assert opts["userAuthentication"] == {"endpoint": "/pusher/user-auth", "transport": "ajax"}


def test_template_helper_for_a_local_server() -> None:
    app = Flask(__name__)
    app.config.update(
        PUSHER_APP_ID="1",
        PUSHER_KEY="k",
        PUSHER_SECRET="s",
        PUSHER_HOST="127.0.0.1",
        PUSHER_PORT="6001",
        PUSHER_SSL="false",
        PUSHER_CLUSTER="eu",
        PUSHER_URL_PREFIX="/rt",
    )
    Pusher(app)
    with app.test_request_context():
        opts = json.loads(render_template_string("{{ pusher_options(activityTimeout=5000) }}"))
    assert opts["wsHost"] == "127.0.0.1" and opts["wsPort"] == 6001
    assert opts["forceTLS"] is False and opts["enabledTransports"] == ["ws"]
    assert opts["cluster"] == "eu" and opts["activityTimeout"] == 5000
    assert opts["channelAuthorization"]["endpoint"] == "/rt/auth"


def test_template_helper_adds_the_csrf_header_with_csrfprotect(app: Flask, pusher: Pusher) -> None:
    from flask_wtf.csrf import CSRFProtect

    app.config["SECRET_KEY"] = "dev"
    CSRFProtect(app)
    with app.test_request_context():
        opts = json.loads(render_template_string("{{ pusher_options() }}"))
    assert opts["channelAuthorization"]["headers"]["X-CSRFToken"]
