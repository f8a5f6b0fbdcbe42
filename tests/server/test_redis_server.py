"""The real-Redis fixture the cluster's tests stand on (issue 8, "How it is
checked"): it starts, answers, stops, restarts empty on the same port, dies on kill."""

from __future__ import annotations

import pytest
import redis

from .redis_server import RedisServer


def test_started_server_answers_on_its_url(redis_server: RedisServer) -> None:
    assert redis_server.running
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis_server.client()
    client.set("k", "v")
    assert client.get("k") == "v"
    assert redis.Redis.from_url(redis_server.url).ping()


def test_stop_then_restart_on_the_same_port_comes_back_empty(redis_server: RedisServer) -> None:
    client = redis_server.client(socket_timeout=2)
    client.set("k", "v")
    port = redis_server.port
    redis_server.stop()
    assert not redis_server.running
    with pytest.raises(redis.ConnectionError):
        client.ping()
    redis_server.restart()
    assert redis_server.port == port
    assert client.ping() and client.get("k") is None  # no persistence: a Redis that forgot


def test_kill_is_a_crash_and_start_brings_it_back(redis_server: RedisServer) -> None:
    process = redis_server.process
    assert process is not None
    redis_server.kill()
    assert process.returncode == -9
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_server.url, socket_connect_timeout=1).ping()
    redis_server.start()
    assert redis_server.client().ping()


def test_start_twice_is_an_error(redis_server: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        redis_server.start()
