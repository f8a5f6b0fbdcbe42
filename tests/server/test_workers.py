"""``--redis``, ``--redis-prefix``, ``--node-timeout`` and ``--workers N`` (issue 8,
items 1 and 4): usage errors on both commands, the options reaching the server,
and real worker processes on one SO_REUSEPORT port, supervised by their parent."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from flask_pusher import local
from flask_pusher import Pusher
from flask_pusher.cli import pusher_cli
from flask_pusher.server import AppConfig
from flask_pusher.server.cli import main
from flask_pusher.server.serve import run

from .helpers import APP_ID
from .helpers import KEY
from .helpers import pusher_client
from .helpers import run_scenario
from .helpers import SECRET
from .helpers import WS
from .redis_server import free_port
from .redis_server import RedisServer

CREDENTIALS = ["--app-id", APP_ID, "--key", KEY, "--secret", SECRET]
REDIS = "redis://127.0.0.1:6379/0"


def record_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the server's ``run`` with one that records its keyword arguments."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr("flask_pusher.server.serve.run", lambda *args, **kw: seen.append(kw))
    return seen


# -- usage errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "2"], "workers share state through Redis; add --redis URL"),
        (["--workers", "2", "--redis", REDIS, "--port", "0"], "workers share one known port"),
        (["--redis", "http://127.0.0.1:6379"], "expected redis://"),
        (["--redis", "redis://127.0.0.1:port/0"], "its port is not a number"),
        (["--redis", "redis://127.0.0.1/zero"], "its database is not a number"),
        (["--redis", "unix://"], "it has no socket path"),
        (["--node-timeout", "0.5"], "0.5 is not in the range 1"),
        (["--node-timeout", "301"], "301.0 is not in the range"),
        (["--workers", "0"], "0 is not in the range"),
        (["--redis-prefix", ""], "must not be empty"),
    ],
)
def test_usage_errors_say_what_is_expected(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(main, CREDENTIALS + argv)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_bad_url_does_not_show_its_password() -> None:
    result = CliRunner().invoke(main, [*CREDENTIALS, "--redis", "redis://:hunter2@h:x/0"])
    assert result.exit_code == 2
    assert "hunter2" not in result.output and "redis://:***@h:x/0" in result.output


def test_workers_need_so_reuseport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    argv = [*CREDENTIALS, "--workers", "2", "--redis", REDIS, "--port", "6001"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2
    assert "needs SO_REUSEPORT, which this platform does not have" in result.output


def test_run_checks_workers_too() -> None:
    with pytest.raises(ValueError, match="add --redis URL"):
        run([AppConfig(APP_ID, KEY, SECRET)], port=6001, workers=2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "2"], "workers share state through Redis; add --redis URL"),
        (["--redis", "tcp://127.0.0.1:6379"], "is not a Redis URL"),
        (["--workers", "3", "--redis", REDIS, "--port", "0"], "needs a fixed --port"),
    ],
)
def test_usage_errors_of_the_module_command(argv: list[str], message: str) -> None:
    command = [sys.executable, "-m", "flask_pusher.server", *CREDENTIALS, *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


# -- the options reach the server ----------------------------------------------


def test_redis_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_run(monkeypatch)
    env = {"PUSHER_SERVER_REDIS_URL": "rediss://:pw@r.example:6380/3"}
    result = CliRunner().invoke(main, CREDENTIALS, env=env)
    assert result.exit_code == 0, result.output
    (options,) = seen
    assert options["redis_url"] == "rediss://:pw@r.example:6380/3"
    assert (options["redis_prefix"], options["node_timeout"], options["workers"]) == (
        "flask-pusher",
        30.0,
        1,
    )
    bad = CliRunner().invoke(main, CREDENTIALS, env={"PUSHER_SERVER_REDIS_URL": "localhost"})
    assert bad.exit_code == 2 and "PUSHER_SERVER_REDIS_URL" in bad.output


def test_without_redis_the_server_gets_no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_run(monkeypatch)
    monkeypatch.delenv("PUSHER_SERVER_REDIS_URL", raising=False)
    assert CliRunner().invoke(main, CREDENTIALS).exit_code == 0
    assert seen[0]["redis_url"] is None


def _flask_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(PUSHER_APP_ID=APP_ID, PUSHER_KEY=KEY, PUSHER_SECRET=SECRET, **config)
    Pusher(app)
    return app


def test_flask_pusher_serve_takes_the_same_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_run(monkeypatch)
    runner = _flask_app().test_cli_runner()
    argv = ["serve", "--redis", REDIS, "--redis-prefix", "px", "--node-timeout", "5"]
    result = runner.invoke(pusher_cli, [*argv, "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert seen[0]["redis_url"] == REDIS and seen[0]["redis_prefix"] == "px"
    assert (seen[0]["node_timeout"], seen[0]["workers"]) == (5.0, 2)
    result = runner.invoke(pusher_cli, ["serve", "--workers", "2"])
    assert result.exit_code == 2 and "add --redis URL" in result.output


def test_flask_pusher_serve_falls_back_to_the_apps_config(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_run(monkeypatch)
    monkeypatch.delenv("PUSHER_SERVER_REDIS_URL", raising=False)
    app = _flask_app(PUSHER_SERVER_REDIS_URL=REDIS, PUSHER_SERVER_REDIS_PREFIX="app1")
    runner = app.test_cli_runner()
    assert runner.invoke(pusher_cli, ["serve"]).exit_code == 0
    assert (seen[0]["redis_url"], seen[0]["redis_prefix"]) == (REDIS, "app1")
    other = "redis://10.0.0.1:6379/1"
    argv = ["serve", "--redis", other, "--redis-prefix", "cli"]
    assert runner.invoke(pusher_cli, argv).exit_code == 0  # the command line wins
    assert (seen[1]["redis_url"], seen[1]["redis_prefix"]) == (other, "cli")


class FakeLocalServer:
    """Records what :func:`flask_pusher.local.ensure_started` gives LocalServer."""

    made: list[dict[str, Any]] = []

    def __init__(self, apps: Any, **kwargs: Any) -> None:
        FakeLocalServer.made.append(kwargs)
        self.url = "http://127.0.0.1:1"
        self.console_url = None

    def start(self) -> FakeLocalServer:
        return self

    def stop(self) -> None:
        pass


def test_the_local_server_gets_the_config_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flask_pusher.server.serve.LocalServer", FakeLocalServer)
    FakeLocalServer.made.clear()
    app = _flask_app(
        PUSHER_LOCAL_SERVER=True,
        PUSHER_LOCAL_SERVER_PORT=free_port(),
        PUSHER_SERVER_REDIS_URL="unix:///run/redis.sock?db=1",
        PUSHER_SERVER_REDIS_PREFIX="dev",
    )
    try:
        with app.app_context():
            local.ensure_started(app.extensions["pusher"].settings)
    finally:
        local.stop_all()
    (kwargs,) = FakeLocalServer.made
    assert kwargs["redis_url"] == "unix:///run/redis.sock?db=1"
    assert kwargs["redis_prefix"] == "dev"


# -- real workers ---------------------------------------------------------------


class Output:
    """The lines a process writes to stderr, read by a thread as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.stream = proc.stderr
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0, start: int = 0) -> re.Match[str]:
        """The first line from index ``start`` on that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no line matching {pattern!r} in:\n{self.text()}")
                self.changed.wait(remaining)

    def text(self) -> str:
        return "".join(self.lines)


def health(port: int) -> str:
    """``GET /health`` on a fresh connection: the node that answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert response.status == 200
        node: str = json.loads(response.read())["node"]
        return node
    finally:
        conn.close()


def nodes_answering(port: int, want: set[str], attempts: int = 200) -> set[str]:
    """The nodes that answer ``/health`` over fresh connections, until all of
    ``want`` have (SO_REUSEPORT spreads connections) or ``attempts`` run out."""
    seen: set[str] = set()
    for _ in range(attempts):
        seen.add(health(port))
        if want <= seen:
            break
    return seen


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def workers(redis_server: RedisServer) -> Iterator[tuple[subprocess.Popen[str], Output, int]]:
    """``python -m flask_pusher.server --workers 2`` on a free port, started."""
    port = free_port()
    command = [sys.executable, "-m", "flask_pusher.server", *CREDENTIALS, "--port", str(port)]
    command += ["--workers", "2", "--redis", redis_server.url, "--node", "box"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    output = Output(proc)
    try:
        yield proc, output, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        output.thread.join(5)
        assert proc.stderr is not None
        proc.stderr.close()


def worker_pids(output: Output) -> dict[str, int]:
    line = output.wait_for(r"INFO Workers: (.*)").group(1)
    return {node: int(pid) for node, pid in re.findall(r"(\S+) \(pid (\d+)\)", line)}


@pytest.mark.timeout(90)
def test_two_workers_share_the_port_and_stop_on_sigterm(
    workers: tuple[subprocess.Popen[str], Output, int],
) -> None:
    proc, output, port = workers
    pids = worker_pids(output)
    assert set(pids) == {"box/1", "box/2"}
    assert nodes_answering(port, {"box/1", "box/2"}) == {"box/1", "box/2"}
    banner = rf"listening on http://127\.0\.0\.1:{port}, serving app {APP_ID} \(key {KEY}\)"
    assert len(re.findall(banner, output.text())) == 1  # the parent's, once
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert all(gone(pid) for pid in pids.values())
    assert output.text().count("Shutting down: closing connections") == 2  # each worker's


@pytest.mark.timeout(90)
def test_a_killed_worker_is_started_again(
    workers: tuple[subprocess.Popen[str], Output, int],
) -> None:
    proc, output, port = workers
    pids = worker_pids(output)
    mark = len(output.lines)
    os.kill(pids["box/1"], signal.SIGKILL)
    output.wait_for(r"Worker box/1 \(pid \d+\) was killed by SIGKILL; restarting it in", 10, mark)
    new_pid = int(output.wait_for(r"Worker box/1 restarted \(pid (\d+)\)", 20, mark).group(1))
    assert new_pid != pids["box/1"] and proc.poll() is None
    assert "box/1" in nodes_answering(port, {"box/1"})
    # Dying again soon after its start doubles the delay: a crash loop does not spin.
    mark = len(output.lines)
    os.kill(new_pid, signal.SIGKILL)
    output.wait_for(
        r"Worker box/1 \(pid \d+\) was killed by SIGKILL; restarting it in 1 s", 10, mark
    )
    new_pid = int(output.wait_for(r"Worker box/1 restarted \(pid (\d+)\)", 20, mark).group(1))
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the same clean stop
    assert proc.wait(10) == 0
    assert gone(new_pid) and gone(pids["box/2"])


@pytest.mark.timeout(90)
def test_a_worker_that_cannot_listen_fails_the_start(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "flask_pusher.server", *CREDENTIALS]
        command += ["--port", str(port), "--workers", "2", "--redis", redis_server.url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert re.search(r"Error: worker \S+/\d did not start: .*address already in use", result.stderr)
    assert "listening on" not in result.stderr


@pytest.mark.timeout(90)
def test_flask_pusher_serve_runs_workers(redis_server: RedisServer) -> None:
    """The ``flask`` script re-imported as the workers' main module (spawn) is harmless."""
    port = free_port()
    flask = Path(sys.executable).with_name("flask")
    command = [str(flask), "--app", "tests.cli_app", "pusher", "serve", "--port", str(port)]
    command += ["--workers", "2", "--redis", redis_server.url, "--node", "web"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    output = Output(proc)
    try:
        output.wait_for(rf"listening on http://127\.0\.0\.1:{port}, serving app 7")
        assert set(worker_pids(output)) == {"web/1", "web/2"}
        assert nodes_answering(port, {"web/1", "web/2"}) == {"web/1", "web/2"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        output.thread.join(5)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.timeout(90)
def test_workers_act_as_one_server(workers: tuple[subprocess.Popen[str], Output, int]) -> None:
    """An event triggered on any worker reaches subscribers on every worker
    (reference §4: the HTTP API publishes to every subscriber of the channel)."""
    pytest.importorskip("flask_pusher.server.cluster", reason="the Redis cluster is not merged yet")
    _, output, port = workers
    worker_pids(output)
    client = pusher_client(port)

    async def scenario(session: Any) -> None:
        # 12 connections: the kernel puts some on each worker (all on one: 1 in 2048).
        sockets = [await WS.connect(session, f"ws://127.0.0.1:{port}") for _ in range(12)]
        for ws in sockets:
            await ws.subscribe("news")
        for n in range(4):  # each trigger on a fresh connection, so on either worker
            client.trigger("news", "hello", {"n": n})
        for ws in sockets:
            got = [json.loads((await ws.expect("hello"))["data"])["n"] for _ in range(4)]
            assert got == [0, 1, 2, 3]

    run_scenario(scenario)
