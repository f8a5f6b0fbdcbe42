"""The server's event loop (issue 19): ``--loop``/``loop``/``PUSHER_SERVER_LOOP``
picks uvloop or asyncio's; ``auto`` is uvloop when it is installed; uvloop
asked for and missing stops the start with a message saying what to do."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
import pytest
import uvloop
from click.testing import CliRunner

from flask_pusher.server import cli
from flask_pusher.server import eventloop
from flask_pusher.server import serve
from flask_pusher.server.config import AppConfig
from flask_pusher.server.serve import LocalServer
from flask_pusher.server.serve import run
from flask_pusher.server_options import ServerOptions

from .helpers import APP_ID
from .helpers import KEY
from .helpers import pusher_client
from .helpers import SECRET
from .helpers import WS

APPS = [AppConfig(APP_ID, KEY, SECRET)]


async def _deliver(ws_url: str, port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        ws = await WS.connect(session, ws_url)
        await ws.subscribe("room")
        client = pusher_client(port)
        await asyncio.to_thread(client.trigger, "room", "hello", {"n": 1})
        frame = await ws.expect("hello")
        await ws.close()
        return frame


@pytest.mark.parametrize(
    ("choice", "kind"),
    [("uvloop", uvloop.Loop), ("auto", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)],
)
def test_local_server_runs_on_the_chosen_loop(choice: str, kind: type) -> None:
    """The thread's loop is the chosen one, and serves a real client."""
    with LocalServer(APPS, loop=choice) as server:
        loop = server._loop
        assert isinstance(loop, kind)
        if choice == "asyncio":
            assert not isinstance(loop, uvloop.Loop)
        frame = asyncio.run(_deliver(server.ws_url, server.port))
    assert frame["event"] == "hello" and frame["channel"] == "room"


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop cannot be imported, as where it has no wheel."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


@pytest.mark.usefixtures("no_uvloop")
def test_uvloop_asked_for_and_missing_stops_the_start() -> None:
    server = LocalServer(APPS, loop="uvloop")
    with pytest.raises(RuntimeError, match=r"needs uvloop.*pip install.*--loop asyncio"):
        server.start()
    assert server.server is None
    with pytest.raises(RuntimeError, match="needs uvloop"):
        run(APPS, port=0, loop="uvloop")  # before it listens: it would block otherwise
    base = ["--app-id", "1", "--key", "k", "--secret", "s", "--port", "0"]
    result = CliRunner().invoke(cli.main, [*base, "--loop", "uvloop"])
    assert result.exit_code == 1 and "Error: --loop uvloop" in result.output, result.output


@pytest.mark.usefixtures("no_uvloop")
def test_auto_without_uvloop_is_asyncios_loop() -> None:
    assert eventloop.loop_factory("auto") is asyncio.new_event_loop
    with LocalServer(APPS, loop="auto") as server:
        assert not isinstance(server._loop, uvloop.Loop)
        frame = asyncio.run(_deliver(server.ws_url, server.port))
    assert frame["event"] == "hello"


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="loop must be one of auto, asyncio, uvloop"):
        ServerOptions(loop="tokio")
    with pytest.raises(ValueError, match="loop must be one of"):
        LocalServer(APPS, loop="tokio")
    result = CliRunner().invoke(
        cli.main, ["--app-id", "1", "--key", "k", "--secret", "s", "--loop", "tokio"]
    )
    assert result.exit_code == 2 and "'tokio' is not one of" in result.output


def test_the_command_line_passes_the_loop_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--loop`` and ``PUSHER_SERVER_LOOP`` reach ``run``."""
    got: list[Any] = []
    monkeypatch.setattr(serve, "run", lambda *args, **kwargs: got.append(kwargs["loop"]))
    base = ["--app-id", "1", "--key", "k", "--secret", "s"]
    assert CliRunner().invoke(cli.main, [*base, "--loop", "asyncio"]).exit_code == 0
    result = CliRunner().invoke(cli.main, base, env={"PUSHER_SERVER_LOOP": "uvloop"})
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(cli.main, base).exit_code == 0
    assert got == ["asyncio", "uvloop", "auto"]
