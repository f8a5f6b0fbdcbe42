"""``flask pusher listen`` as a user runs it: a subprocess against the local server,
its lines read as they are flushed, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pusher as pusher_http
import pytest

from flask_pusher.channels import AuthOptions
from flask_pusher.channels import AuthRequest
from flask_pusher.channels import SyncChannelsClient
from flask_pusher.server import LocalServer
from flask_pusher.testing import TEST_APP_ID
from flask_pusher.testing import TEST_KEY
from flask_pusher.testing import TEST_MASTER_KEY
from flask_pusher.testing import TEST_SECRET


def env(server: LocalServer, key: str = TEST_KEY) -> dict[str, str]:
    return {
        **os.environ,
        "FLASK_APP": "tests.channels.listen_app",
        "PYTHONUNBUFFERED": "1",
        "PUSHER_APP_ID": TEST_APP_ID,
        "PUSHER_KEY": key,
        "PUSHER_SECRET": TEST_SECRET,
        "PUSHER_HOST": server.host,
        "PUSHER_PORT": str(server.port),
        "PUSHER_SSL": "false",
        "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": TEST_MASTER_KEY,
    }


@contextmanager
def listening(
    server: LocalServer, *args: str, key: str = TEST_KEY
) -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-m", "flask", "pusher", "listen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(server, key),
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def wait_subscribed(proc: subprocess.Popen[str], count: int) -> None:
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:
        if line.startswith("[subscribed to "):
            seen += 1
            if seen == count:
                return
    pytest.fail("listen printed no subscription")


def http(server: LocalServer) -> Any:
    return pusher_http.Pusher(
        TEST_APP_ID,
        TEST_KEY,
        TEST_SECRET,
        host=server.host,
        port=server.port,
        ssl=False,
        encryption_master_key_base64=TEST_MASTER_KEY,
    )


@pytest.mark.timeout(60)
def test_listen_prints_json_lines_decrypted_with_members_until_ctrl_c(
    pusher_server: LocalServer,
) -> None:
    channels = ["room", "private-encrypted-vault", "presence-lobby"]
    with listening(pusher_server, *channels, "--json", "--user-id", "cli") as proc:
        wait_subscribed(proc, 3)
        api = http(pusher_server)
        api.trigger("room", "message", {"text": "hi"})
        api.trigger("private-encrypted-vault", "secret", {"gold": 1})
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        second = json.loads(proc.stdout.readline())
        assert first == {"channel": "room", "event": "message", "data": {"text": "hi"}}
        assert second == {
            "channel": "private-encrypted-vault",
            "event": "secret",
            "data": {"gold": 1},
        }
        members = api.users_info("presence-lobby")
        assert members == {"users": [{"id": "cli"}]}

        def joiner_auth(request: AuthRequest) -> Any:
            return api.authenticate(request.channel_name, request.socket_id, {"user_id": "joiner"})

        options = AuthOptions(handler=joiner_auth)
        with SyncChannelsClient(
            TEST_KEY,
            host=pusher_server.host,
            port=pusher_server.port,
            use_tls=False,
            channel_authorization=options,
        ) as joiner:
            joiner.subscribe("presence-lobby")
            added = json.loads(proc.stdout.readline())
        removed = json.loads(proc.stdout.readline())
        member = {"user_id": "joiner", "user_info": None}
        assert added == {
            "channel": "presence-lobby",
            "event": "pusher:member_added",
            "data": member,
        }
        assert removed["event"] == "pusher:member_removed" and removed["data"] == member
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode in (0, 130)
        assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_listen_filters_events_and_prints_plain_lines(pusher_server: LocalServer) -> None:
    with listening(pusher_server, "news", "--event", "wanted") as proc:
        wait_subscribed(proc, 1)
        api = http(pusher_server)
        api.trigger("news", "unwanted", {"a": 1})
        api.trigger("news", "wanted", "plain")
        assert proc.stdout is not None
        assert proc.stdout.readline() == "news wanted plain\n"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


@pytest.mark.timeout(60)
def test_listen_wrong_key_exits_non_zero_with_a_message(pusher_server: LocalServer) -> None:
    with listening(pusher_server, "room", key="wrong-key") as proc:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "refused" in err and "4001" in err and "PUSHER_KEY" in err
    assert "Traceback" not in err and out == ""


def test_listen_invalid_channel_name_is_a_usage_error(pusher_server: LocalServer) -> None:
    with listening(pusher_server, "bad name!") as proc:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "is not a channel name" in err and "Traceback" not in err


@pytest.mark.timeout(60)
def test_listen_refused_channel_exits_non_zero_with_its_status(pusher_server: LocalServer) -> None:
    # The app's secret is not the server's: its signature is refused (401).
    environ = {**env(pusher_server), "PUSHER_SECRET": "not-the-servers-secret"}
    with subprocess.Popen(
        [sys.executable, "-m", "flask", "pusher", "listen", "private-room"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    ) as proc:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == ""
    assert "subscription refused" in err and "(401)" in err and "Traceback" not in err
