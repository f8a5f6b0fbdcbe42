"""The ``flask pusher`` commands."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys

import pusher as pusher_http
import pytest
from flask import Flask

from flask_pusher.cli import pusher_cli
from flask_pusher.testing import record_events


def test_trigger(app: Flask, pusher: object) -> None:
    runner = app.test_cli_runner()
    with record_events(app) as events:
        result = runner.invoke(pusher_cli, ["trigger", "room", "hello", '{"n": 1}'])
        plain = runner.invoke(pusher_cli, ["trigger", "room", "hello", "not json"])
    assert result.exit_code == 0 and plain.exit_code == 0, result.output
    assert [(e.channels, e.name, e.data) for e in events] == [
        (("room",), "hello", '{"n": 1}'),
        (("room",), "hello", "not json"),
    ]


def test_commands_need_the_extension() -> None:
    app = Flask(__name__)
    result = app.test_cli_runner().invoke(pusher_cli, ["trigger", "c", "e"])
    assert result.exit_code == 2 and "Pusher(app)" in result.output


def test_the_command_group_is_registered_with_flask(app: Flask, pusher: object) -> None:
    (entry,) = importlib.metadata.entry_points(group="flask.commands", name="pusher")
    assert entry.load() is pusher_cli
    result = app.test_cli_runner().invoke(pusher_cli, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output and "trigger" in result.output


@pytest.mark.timeout(60)
def test_serve_runs_the_local_server_for_the_apps_credentials() -> None:
    pytest.importorskip("aiohttp")
    env = {**os.environ, "FLASK_APP": "tests.cli_app", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "flask", "pusher", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        check_server(proc)


def check_server(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+), serving app 7", line)
            if match:
                break
        else:
            pytest.fail("the server printed no startup line")
        client = pusher_http.Pusher(
            "7", "cli-key", "cli-secret", host="127.0.0.1", port=int(match.group(1)), ssl=False
        )
        assert client.trigger("room", "e", {"x": 1}) == {}
        assert client.channels_info() == {"channels": {}}
        wrong = pusher_http.Pusher(
            "7", "cli-key", "wrong", host="127.0.0.1", port=int(match.group(1)), ssl=False
        )
        with pytest.raises(pusher_http.errors.PusherBadAuth):
            wrong.trigger("room", "e", {})
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


@pytest.mark.timeout(60)
def test_serve_takes_the_apps_limits_from_its_settings() -> None:
    """PUSHER_SERVER_APP_LIMITS reaches ``flask pusher serve``'s app (issue
    16): a cap of one connection per address closes the second with 4004
    (reference §5.12), over a real socket."""
    aiohttp = pytest.importorskip("aiohttp")
    env = {
        **os.environ,
        "FLASK_APP": "tests.cli_app",
        "PYTHONUNBUFFERED": "1",
        "FLASK_PUSHER_SERVER_APP_LIMITS": '{"max_connections_per_address": 1}',
    }
    with subprocess.Popen(
        [sys.executable, "-m", "flask", "pusher", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    break
            else:
                pytest.fail("the server printed no startup line")
            url = f"ws://127.0.0.1:{match.group(1)}/app/cli-key?protocol=7"

            async def two() -> list[dict[str, object]]:
                async with aiohttp.ClientSession() as session:
                    first = await session.ws_connect(url)
                    second = await session.ws_connect(url)
                    frames = [json.loads((await ws.receive(10)).data) for ws in (first, second)]
                    await first.close()
                    await second.close()
                    return frames

            established, refused = asyncio.run(two())
            assert established["event"] == "pusher:connection_established"
            assert refused["event"] == "pusher:error"
            assert refused["data"] == {
                "code": 4004,
                "message": "Too many connections from this address",
            }
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0
