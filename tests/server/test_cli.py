"""``python -m flask_pusher.server``: options, config file, startup line, and a
clean shutdown on SIGTERM (4200 to clients, held webhooks sent)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from flask_pusher.server import AppConfig
from flask_pusher.server import WebhookConfig
from flask_pusher.server.cli import apps_from_options
from flask_pusher.server.cli import load_config
from flask_pusher.server.cli import main
from flask_pusher.server.cli import OpsOptions

from .helpers import APP_ID
from .helpers import KEY
from .helpers import Receiver
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import WS


def exit_code(argv: list[str]) -> int:
    """Run ``python -m flask_pusher.server ARGV`` in-process (usage errors only)."""
    return CliRunner().invoke(main, argv).exit_code


def test_credentials_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("flask_pusher.server.cli.serve", lambda *args: seen.append(args))
    env = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}
    result = CliRunner().invoke(main, ["--port", "0"], env=env)
    assert result.exit_code == 0, result.output
    assert seen == [([AppConfig("1", "k", "s")], "127.0.0.1", 0, False, OpsOptions())]


def test_operations_options_reach_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    argv = ["--app-id", "1", "--key", "k", "--secret", "s", "--console", "--no-metrics"]
    argv += ["--metrics-prefix", "soketi_", "--metrics-port", "9601", "--node", "n1"]
    argv += ["--shutdown-delay", "2.5", "--redis", "redis://r:6380/2", "--redis-prefix", "px"]
    argv += ["--node-timeout", "7.5", "--workers", "3", "--port", "6010"]
    argv += ["--console-allow-host", "app.test", "--trusted-proxy", "10.0.0.0/8"]
    argv += ["--loop", "asyncio"]
    monkeypatch.setattr("flask_pusher.server.serve.run", lambda *args, **kw: seen.append(kw))
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert seen == [
        {
            "debug": False,
            "workers": 3,
            "metrics": False,
            "metrics_prefix": "soketi_",
            "metrics_port": 9601,
            "node": "n1",
            "console": True,
            "shutdown_delay": 2.5,
            "redis_url": "redis://r:6380/2",
            "redis_prefix": "px",
            "node_timeout": 7.5,
            "console_allow_hosts": ("app.test",),
            "trusted_proxies": ("10.0.0.0/8",),
            "loop": "asyncio",
        }
    ]


def test_a_trusted_proxy_must_be_an_address_or_network() -> None:
    result = CliRunner().invoke(
        main, ["--app-id", "1", "--key", "k", "--secret", "s", "--trusted-proxy", "proxy.example"]
    )
    assert result.exit_code == 2
    assert "'proxy.example' is not an IP address or network" in result.output


def test_options_make_one_app() -> None:
    apps = apps_from_options("1", "k", "s", None, ["http://h/1"])
    assert apps == [AppConfig("1", "k", "s", webhooks=[WebhookConfig("http://h/1")])]


def test_config_file_makes_several_apps(tmp_path: Path) -> None:
    path = tmp_path / "apps.json"
    document: dict[str, Any] = {
        "apps": [
            {
                "app_id": "1",
                "key": "a",
                "secret": "s1",
                "webhooks": [{"url": "http://h/1", "event_types": ["member_added"]}],
            },
            {"app_id": "2", "key": "b", "secret": "s2", "enable_client_events": False},
        ]
    }
    path.write_text(json.dumps(document))
    one, two = load_config(str(path))
    assert one.webhooks[0].url == "http://h/1"
    assert one.webhooks[0].event_types == frozenset({"member_added"})
    assert two.enable_client_events is False


@pytest.mark.parametrize(
    "argv",
    [[], ["--app-id", "1", "--key", "k"], ["--webhook", "http://x"], ["--config", "/no/such"]],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert exit_code(argv) == 2


def test_bad_config_field_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "apps.json"
    path.write_text(json.dumps({"apps": [{"app_id": "1", "key": "k", "secret": "s", "x": 1}]}))
    assert exit_code(["--config", str(path)]) == 2


def test_serves_then_shuts_down_cleanly_on_sigterm() -> None:
    receiver = Receiver()
    command = [sys.executable, "-m", "flask_pusher.server", "--app-id", APP_ID]
    command += ["--key", KEY, "--secret", SECRET, "--port", "0", "--webhook", receiver.url]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(
            r"listening on http://127\.0\.0\.1:(\d+), serving app 3 \(key (\w+)\)", line
        )
        assert match, line
        assert match.group(2) == KEY
        port = int(match.group(1))

        async def scenario(session: aiohttp.ClientSession) -> None:
            ws = await WS.connect(session, f"ws://127.0.0.1:{port}")
            await ws.subscribe("news")
            assert [e["name"] for e in receiver.events()] == [
                "channel_occupied",
                "subscription_count",
            ]
            proc.send_signal(signal.SIGTERM)
            error = await ws.expect("pusher:error")
            assert error["data"]["code"] == 4200
            msg = await ws.ws.receive(10)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4200)

        run_scenario(scenario)
        assert proc.wait(20) == 0
        # The vacate webhook, normally held 3 s, was sent before exiting.
        assert receiver.events(timeout=1) == [{"name": "channel_vacated", "channel": "news"}]
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        receiver.close()


@pytest.mark.parametrize("webhooks", [[5], [{"event_types": ["member_added"]}], 5, [{"url": 5}]])
def test_bad_webhooks_in_config_are_a_usage_error(tmp_path: Path, webhooks: Any) -> None:
    path = tmp_path / "apps.json"
    app = {"app_id": "1", "key": "k", "secret": "s", "webhooks": webhooks}
    path.write_text(json.dumps({"apps": [app]}))
    assert exit_code(["--config", str(path)]) == 2
