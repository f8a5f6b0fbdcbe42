"""Settings: precedence, coercion, PUSHER_URL, and errors at init_app."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from flask import Flask
from pusher.requests import RequestsBackend

from flask_pusher import ConfigurationError
from flask_pusher import Pusher
from flask_pusher.settings import OPTIONS
from flask_pusher.settings import resolve

REQUIRED = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update({**REQUIRED, **config})
    return app


@pytest.mark.parametrize(
    ("config", "constructor", "init", "expected"),
    [
        ({}, {}, {}, 5),  # default
        ({"PUSHER_TIMEOUT": 7}, {}, {}, 7),  # app.config beats the default
        ({"PUSHER_TIMEOUT": 7}, {"timeout": 8}, {}, 8),  # constructor beats app.config
        ({"PUSHER_TIMEOUT": 7}, {"timeout": 8}, {"timeout": 9}, 9),  # init_app beats all
        ({}, {}, {"timeout": 9}, 9),
        ({"PUSHER_TIMEOUT": 7}, {}, {"timeout": 9}, 9),
    ],
)
def test_precedence(
    config: dict[str, Any], constructor: dict[str, Any], init: dict[str, Any], expected: int
) -> None:
    app = make_app(**config)
    pusher = Pusher(**constructor)
    pusher.init_app(app, **init)
    with app.app_context():
        assert pusher.settings.timeout == expected
        assert pusher.client._pusher_client.timeout == expected


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.config_key)
def test_every_option_has_a_config_key_and_a_keyword(option: Any) -> None:
    assert option.config_key == "PUSHER_" + {
        "auth_path": "AUTH",
        "user_auth_path": "USER_AUTH",
        "webhooks_path": "WEBHOOKS",
    }.get(option.name, option.name.upper())


def test_constructor_keyword_beats_config_per_app() -> None:
    pusher = Pusher(secret="top-secret", ssl=False)
    app = make_app(PUSHER_SECRET="from-config", PUSHER_SSL=True)
    pusher.init_app(app)
    with app.app_context():
        assert pusher.client._pusher_client.secret == "top-secret"
        assert pusher.client._pusher_client.ssl is False


@pytest.mark.parametrize(
    ("key", "raw", "name", "expected"),
    [
        ("PUSHER_PORT", "80", "port", 80),
        ("PUSHER_SSL", "false", "ssl", False),
        ("PUSHER_SSL", "TRUE", "ssl", True),
        ("PUSHER_SSL", "0", "ssl", False),
        ("PUSHER_TIMEOUT", "2.5", "timeout", 2.5),
        ("PUSHER_APP_ID", 1234, "app_id", "1234"),
        ("PUSHER_AUTH_JSONP", "yes", "auth_jsonp", True),
        ("PUSHER_AUTH_BATCH_LIMIT", "10", "auth_batch_limit", 10),
        ("PUSHER_BACKEND_OPTIONS", '{"verify": false}', "backend_options", {"verify": False}),
        ("PUSHER_BACKEND", "pusher.requests.RequestsBackend", "backend", RequestsBackend),
        ("PUSHER_BACKEND", "pusher.requests:RequestsBackend", "backend", RequestsBackend),
        ("PUSHER_JSON_ENCODER", "json.JSONEncoder", "json_encoder", json.JSONEncoder),
        ("PUSHER_URL_PREFIX", "/rt/", "url_prefix", "/rt"),
        ("PUSHER_URL_PREFIX", "", "url_prefix", ""),
        ("PUSHER_HOST", "", "host", None),
        ("PUSHER_SERVER_REDIS_URL", "", "server_redis_url", None),
        ("PUSHER_SERVER_REDIS_URL", "redis://r:6379/1", "server_redis_url", "redis://r:6379/1"),
        ("PUSHER_SERVER_REDIS_PREFIX", "app1", "server_redis_prefix", "app1"),
        (
            "PUSHER_SERVER_CONSOLE_ALLOW_HOSTS",
            "A.test, b.test",
            "server_console_allow_hosts",
            ("a.test", "b.test"),
        ),
        (
            "PUSHER_SERVER_CONSOLE_ALLOW_HOSTS",
            ["x.test"],
            "server_console_allow_hosts",
            ("x.test",),
        ),
        ("PUSHER_SERVER_LOOP", "asyncio", "server_loop", "asyncio"),
        ("PUSHER_SERVER_LOOP", "uvloop", "server_loop", "uvloop"),
    ],
)
def test_strings_from_the_environment_are_coerced(
    key: str, raw: Any, name: str, expected: Any
) -> None:
    settings = resolve({**REQUIRED, key: raw}, {}, {})
    assert getattr(settings, name) == expected


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("PUSHER_PORT", "eighty"),
        ("PUSHER_PORT", "70000"),
        ("PUSHER_SSL", "maybe"),
        ("PUSHER_TIMEOUT", "-1"),
        ("PUSHER_APP_ID", "app-1"),
        ("PUSHER_BACKEND", "no.such.module.Backend"),
        ("PUSHER_BACKEND_OPTIONS", "[1, 2]"),
        ("PUSHER_AUTH", "auth"),
        ("PUSHER_URL", "pusher://nope"),
        ("PUSHER_ENCRYPTION_MASTER_KEY_BASE64", "dG9vIHNob3J0"),
        ("PUSHER_SERVER_REDIS_URL", "http://127.0.0.1:6379"),
        ("PUSHER_SERVER_REDIS_URL", 6379),
        ("PUSHER_SERVER_REDIS_PREFIX", ""),
        ("PUSHER_SERVER_CONSOLE_ALLOW_HOSTS", 3),
        ("PUSHER_SERVER_LOOP", "tokio"),
    ],
)
def test_malformed_values_raise_naming_the_key(key: str, raw: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        Pusher(make_app(**{key: raw}))


@pytest.mark.parametrize("missing", ["PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"])
def test_missing_credentials_raise_at_init_app(missing: str) -> None:
    app = make_app()
    del app.config[missing]
    with pytest.raises(ConfigurationError, match=rf"{missing} is not set.*init_app"):
        Pusher(app)


def test_missing_credentials_say_the_local_server_needs_no_account() -> None:
    with pytest.raises(ConfigurationError, match=r"PUSHER_LOCAL_SERVER = True.*no\s+credentials"):
        Pusher(Flask(__name__))
    app = Flask(__name__)
    app.config["PUSHER_LOCAL_SERVER"] = True
    assert resolve(app.config, {}, {}).local_server  # and it is true


@pytest.mark.parametrize(
    ("typo", "key"),
    [
        ("PUSHER_APPID", "PUSHER_APP_ID"),
        ("PUSHER_APP_KEY", "PUSHER_KEY"),
        ("PUSHER_SECERT", "PUSHER_SECRET"),
        ("pusher_app_id", "PUSHER_APP_ID"),
    ],
)
def test_a_misspelt_required_key_gets_did_you_mean(typo: str, key: str) -> None:
    app = make_app(**{typo: "1"})
    del app.config[key]
    with (
        pytest.raises(ConfigurationError, match=rf"{typo} is set: did you mean {key}\?"),
        pytest.warns(UserWarning, match=rf"{typo}.*did you mean {key}\?"),
    ):
        Pusher(app)


def test_a_misspelt_optional_key_warns_and_the_apps_own_keys_do_not() -> None:
    with pytest.warns(
        UserWarning, match=r"'PUSHER_TIMOUT'.*ignored: did you mean PUSHER_TIMEOUT\?"
    ):
        Pusher(make_app(PUSHER_TIMOUT=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Pusher(make_app(PUSHER_ROOMS=["lobby"], PUSHER_BEAMS_INSTANCE_ID="x"))


def test_unknown_keyword_raises_type_error() -> None:
    with pytest.raises(TypeError, match="Did you mean secret= instead of secrett="):
        Pusher(secrett="x")
    with pytest.raises(TypeError, match="secrett"):
        Pusher(secrett="x")
    with pytest.raises(TypeError, match="prefix"):
        Pusher().init_app(make_app(), prefix="/x")


def test_pusher_url_fills_in_what_is_not_set() -> None:
    app = Flask(__name__)
    app.config["PUSHER_URL"] = "https://the-key:the%2Fsecret@api-eu.pusher.com:8443/apps/42"
    settings = resolve(app.config, {}, {})
    assert (settings.app_id, settings.key, settings.secret) == ("42", "the-key", "the/secret")
    assert (settings.host, settings.port, settings.ssl) == ("api-eu.pusher.com", 8443, True)
    # A key given on its own beats the URL's part, at any level.
    assert resolve({**app.config, "PUSHER_KEY": "own"}, {}, {}).key == "own"
    assert resolve(app.config, {}, {"ssl": False}).ssl is False


def test_obsolete_notification_keys_warn() -> None:
    with pytest.warns(DeprecationWarning, match="PUSHER_NOTIFICATION_HOST"):
        Pusher(make_app(PUSHER_NOTIFICATION_HOST="example.com"))


def test_repr_hides_secrets() -> None:
    settings = resolve(
        {**REQUIRED, "PUSHER_SECRET": "hunter2", "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": "K" * 44},
        {},
        {},
    )
    assert "hunter2" not in repr(settings)
    assert "K" * 44 not in repr(settings)


def test_a_bad_redis_url_is_not_repeated_with_its_password() -> None:
    url = "redis://:hunter2@r:port/0"
    with pytest.raises(ConfigurationError, match=r"redis://\[\[USER\]") as caught:
        resolve({**REQUIRED, "PUSHER_SERVER_REDIS_URL": url}, {}, {})
    assert "hunter2" not in str(caught.value) and "redis://:***@r:port/0" in str(caught.value)
    settings = resolve({**REQUIRED, "PUSHER_SERVER_REDIS_URL": "redis://:hunter2@r/0"}, {}, {})
    assert "hunter2" not in repr(settings)


def test_a_misspelt_redis_key_gets_did_you_mean() -> None:
    with pytest.warns(
        UserWarning, match=r"'PUSHER_REDIS_URL'.*did you mean PUSHER_SERVER_REDIS_URL"
    ):
        resolve({**REQUIRED, "PUSHER_REDIS_URL": "redis://r/0"}, {}, {})


def test_settings_are_frozen_at_init_app() -> None:
    app = make_app()
    pusher = Pusher(app)
    app.config["PUSHER_KEY"] = "changed"
    with app.app_context():
        assert pusher.settings.key == "k"
