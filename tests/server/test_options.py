"""Every server option declared once (issue 15): each surface is derived from
:class:`~flask_pusher.server_options.ServerOptions`, and these tests read each
surface back and compare it with the declaration."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import click
import pytest
from flask import Flask

from flask_pusher import local
from flask_pusher import Pusher
from flask_pusher import settings as extension_settings
from flask_pusher.cli import pusher_cli
from flask_pusher.server.app import Server
from flask_pusher.server.cli import apps_from_options
from flask_pusher.server.cli import main
from flask_pusher.server.cli import OpsOptions
from flask_pusher.server.config import AppConfig
from flask_pusher.server.serve import LocalServer
from flask_pusher.server.serve import run
from flask_pusher.server_options import APP_LIMITS
from flask_pusher.server_options import CommandLineOptions
from flask_pusher.server_options import LISTEN
from flask_pusher.server_options import ServerOptions
from flask_pusher.server_options import Spec
from flask_pusher.server_options import specs

DOCS = Path(__file__).parents[2] / "docs"
APPS = [AppConfig("1", "k", "s")]
FLAGGED = [spec for spec in specs(CommandLineOptions) if spec.flag is not None]


def _params(command: click.Command) -> dict[str, click.Parameter]:
    return {param.name: param for param in command.params if param.name is not None}


@pytest.mark.parametrize("command", [main, pusher_cli.commands["serve"]], ids=["python-m", "flask"])
@pytest.mark.parametrize("spec", [*LISTEN, *FLAGGED], ids=lambda s: s.name)
def test_each_flag_is_made_from_its_declaration(command: click.Command, spec: Spec) -> None:
    param = _params(command)[spec.name]
    assert isinstance(param, click.Option)
    assert spec.flag is not None
    flags = spec.flag.split("/")
    assert param.opts == flags[:1] and param.secondary_opts == flags[1:]
    assert param.help == spec.help
    default = () if param.multiple else param.default
    assert default == spec.default
    assert param.envvar == spec.envvar
    if spec.bounds is not None:
        assert isinstance(param.type, (click.IntRange, click.FloatRange))
        assert (param.type.min, param.type.max) == spec.bounds
        assert param.type.min_open is False and param.type.max_open is False


def test_the_command_line_has_no_server_option_left_out() -> None:
    """Each flagged option is on both commands, and nothing else of the server is."""
    declared = {spec.name for spec in (*LISTEN, *FLAGGED)}
    own = {"app_id", "key", "secret", "config", "help", *(spec.name for spec in APP_LIMITS)}
    assert set(_params(main)) - own == declared
    assert set(_params(pusher_cli.commands["serve"])) - {"help"} == declared


def test_the_command_lines_defaults_are_the_declarations() -> None:
    assert OpsOptions is CommandLineOptions
    assert OpsOptions().kwargs() == {
        spec.name: spec.default for spec in specs(ServerOptions) if spec.flag is not None
    }
    assert "workers" not in OpsOptions().kwargs()


def test_server_local_server_and_run_take_the_declared_options() -> None:
    assert Server(APPS).options == ServerOptions()
    assert LocalServer(APPS).options == ServerOptions()
    changed: dict[str, Any] = {"webhook_delay": 0.25, "node_timeout": 7.0, "redis_prefix": "px"}
    assert Server(APPS, **changed).options == ServerOptions(**changed)
    assert LocalServer(APPS, **changed).options == ServerOptions(**changed)
    signature = inspect.signature(run)
    assert signature.parameters["host"].default == LISTEN[0].default
    assert signature.parameters["port"].default == LISTEN[1].default
    assert signature.parameters["workers"].default == CommandLineOptions().workers


@pytest.mark.parametrize("make", [Server, LocalServer, run])
def test_an_unknown_option_is_a_type_error(make: Any) -> None:
    with pytest.raises(TypeError, match="webhook_dealy"):
        make(APPS, webhook_dealy=1.0)


def test_each_config_key_is_an_extension_setting() -> None:
    """Each option with a config key is the extension's ``server_<name>``,
    with the same key and default, in the settings and in the docs."""
    keyed = [spec for spec in specs(ServerOptions) if spec.config_key is not None]
    assert {spec.config_key for spec in keyed} == {
        "PUSHER_SERVER_REDIS_URL",
        "PUSHER_SERVER_REDIS_PREFIX",
        "PUSHER_SERVER_CONSOLE_ALLOW_HOSTS",
        "PUSHER_SERVER_LOOP",
    }
    by_name = {option.name: option for option in extension_settings.OPTIONS}
    fields = {f.name: f for f in dataclasses.fields(extension_settings.PusherSettings)}
    configuration = (DOCS / "configuration.rst").read_text()
    for spec in keyed:
        option = by_name[f"server_{spec.name}"]
        assert (option.config_key, option.default) == (spec.config_key, spec.default)
        assert fields[option.name].default == spec.default
        assert f".. data:: {spec.config_key}\n" in configuration


def test_the_local_server_and_flask_pusher_serve_read_the_config_keys() -> None:
    app = Flask(__name__)
    app.config.update(
        PUSHER_APP_ID="1",
        PUSHER_KEY="k",
        PUSHER_SECRET="s",
        PUSHER_SERVER_REDIS_URL="redis://10.0.0.1:6379/1",
        PUSHER_SERVER_REDIS_PREFIX="app1",
    )
    Pusher(app)
    with app.app_context():
        settings = app.extensions["pusher"].settings
    assert local.server_settings(settings) == {
        "redis_url": "redis://10.0.0.1:6379/1",
        "redis_prefix": "app1",
        "console_allow_hosts": (),
        "loop": "auto",
    }


def test_the_docs_list_each_flag_with_its_default() -> None:
    """The server's and the operations' docs name every flag, and their option
    tables give the declared defaults."""
    text = (DOCS / "server.rst").read_text() + (DOCS / "operations.rst").read_text()
    for spec in (*LISTEN, *FLAGGED):
        assert spec.flag is not None
        assert f"``{spec.flag}" in text, spec.flag
    rows = dict(re.findall(r"^``(--[a-z/-]+)[^`]*``\s+(\S+)\s{2}", text, re.MULTILINE))
    shown = {"True": "on", "False": "off", "None": "none", "30.0": "30", "0.0": "0", "()": "none"}
    compared = 0
    for spec in FLAGGED:
        assert spec.flag is not None
        if spec.flag in rows:
            compared += 1
            # None for --node means HOSTNAME:PORT, worked out at start.
            default = "host:port" if spec.name == "node" else str(spec.default)
            assert rows[spec.flag].strip("`") == shown.get(default, default), spec.flag
    assert compared >= 6


@pytest.mark.parametrize("spec", APP_LIMITS, ids=lambda s: s.name)
def test_each_app_limit_flag_is_made_from_its_declaration(spec: Spec) -> None:
    """``python -m flask_pusher.server``'s per-app limits (issue 16): each
    flag is an ``AppConfig`` field's, with AppConfig's own default (a declared
    ``None`` or ``()`` leaves the field at it), and the docs name it."""
    param = _params(main)[spec.name]
    assert isinstance(param, click.Option) and spec.flag is not None
    assert param.opts == [spec.flag] and param.help == spec.help
    fields = {f.name: f for f in dataclasses.fields(AppConfig)}
    assert spec.name in fields
    if spec.default not in (None, ()):
        assert spec.default == fields[spec.name].default
    if spec.bounds is not None:
        assert isinstance(param.type, (click.IntRange, click.FloatRange))
        assert (param.type.min, param.type.max) == spec.bounds
    assert f"``{spec.flag}" in (DOCS / "server.rst").read_text(), spec.flag
    assert f"``{spec.name}``" in (DOCS / "configuration.rst").read_text(), spec.name


def test_the_limit_flags_reach_the_app_and_need_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags become the ``AppConfig`` of ``--app-id``; without it they are
    a usage error, as is a value AppConfig refuses."""
    from click.testing import CliRunner

    from flask_pusher.server import cli

    served: list[Any] = []
    monkeypatch.setattr(cli, "serve", lambda apps, *rest: served.extend(apps))
    args = ["--app-id", "1", "--key", "k", "--secret", "s", "--max-connections", "5"]
    args += ["--allowed-origin", "Example.com", "--allowed-origin", "*.example.com"]
    args += ["--authorized-connections", "--user-authentication-timeout", "12.5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    limits: dict[str, Any] = {
        "max_connections": 5,
        "allowed_origins": ("Example.com", "*.example.com"),
        "authorized_connections": True,
        "user_authentication_timeout": 12.5,
    }
    assert served == [AppConfig("1", "k", "s", **limits)]
    result = CliRunner().invoke(main, ["--config", "x.json", "--max-connections", "5"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["--max-connections", "5"])
    assert result.exit_code == 2 and "set them per app in the --config FILE" in result.output
    with pytest.raises(click.UsageError, match="max_connections must be positive"):
        apps_from_options("1", "k", "s", None, (), {"max_connections": 0})
