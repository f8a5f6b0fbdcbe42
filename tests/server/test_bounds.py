"""Memory per connection is bounded by the limits, not by what a client sends
(issue 16, item 1): raw WebSocket frames over real sockets, the server's own
memory read from ``/proc``. RFC 6455 §7.4.1 (1009), reference §5.12."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import urllib.request

import pytest

from flask_pusher.server import LocalServer
from flask_pusher.server.handshake import MAX_FRAME_SIZE

from .rawsock import frame
from .rawsock import frame_header
from .rawsock import Raw
from .rawsock import ServerProcess


def ping_of_size(size: int) -> bytes:
    """A ``pusher:ping`` message whose JSON text is exactly ``size`` bytes."""
    head, tail = b'{"event":"pusher:ping","data":{},"pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def metric(server: LocalServer, name: str) -> float:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_the_size_limit_is_exact(server: LocalServer) -> None:
    """A message of exactly the limit is answered; one byte more is a 1009."""
    with Raw(server.port) as ws:
        ws.read_event()
        ws.sock.sendall(frame(0x1, ping_of_size(MAX_FRAME_SIZE)))
        assert ws.read_event()["event"] == "pusher:pong"
        ws.sock.sendall(frame(0x1, ping_of_size(MAX_FRAME_SIZE + 1)))
        events, code = ws.read_until_close()
        assert (events, code) == ([], 1009)


def test_a_message_whose_last_read_crosses_the_limit_is_refused(server: LocalServer) -> None:
    """300 KiB sent at once: the read that completes the message also passes the
    limit (the counter was reset before the check, and the message accepted)."""
    for _ in range(3):
        with Raw(server.port) as ws:
            ws.read_event()
            ws.sock.sendall(frame(0x1, ping_of_size(300 * 1024)))
            events, code = ws.read_until_close()
            assert (events, code) == ([], 1009)


def test_no_frame_reaches_the_core_once_the_close_began(server: LocalServer) -> None:
    """After the 1009, the rest of the oversized message and a whole
    ``pusher:subscribe`` sent before the client's Close reply are dropped."""
    with Raw(server.port) as ws:
        ws.read_event()
        start = b'{"event":"pusher:ping","data":"' + b"x" * MAX_FRAME_SIZE
        ws.sock.sendall(frame(0x1, start, fin=False))
        assert ws.read_until_close() == ([], 1009)
        ws.sock.sendall(frame(0x0, b'"}'))
        ws.send_json({"event": "pusher:subscribe", "data": {"channel": "news"}})
        ws.sock.sendall(frame(0x8, struct.pack("!H", 1000)))
        with pytest.raises(EOFError):
            ws.read()
    assert metric(server, "pusher_ws_messages_received_total") == 0
    assert metric(server, "pusher_connections") == 0


def test_three_connections_streaming_oversized_messages_do_not_grow_the_server() -> None:
    """Three clients that each declare a 1 TiB frame and stream it as fast as
    they can, reconnecting when cut off, for 6 s: the server's memory grows by
    less than 40 MB (it grew by hundreds of MB per second), and each connection
    is cut after a bounded number of bytes (it was held for 5 s)."""
    chunk = b"x" * 65536
    stop = time.monotonic() + 6.0
    per_connection: list[int] = []
    errors: list[BaseException] = []

    def stream(port: int) -> None:
        try:
            while time.monotonic() < stop:
                with Raw(port) as ws:
                    ws.sock.sendall(frame_header(0x1, 1 << 40) + b'{"event":"')
                    sent = 0
                    try:
                        while time.monotonic() < stop:
                            ws.sock.sendall(chunk)
                            sent += len(chunk)
                    except OSError:  # cut off by the server
                        per_connection.append(sent)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    with ServerProcess() as server:
        before = server.rss()
        threads = [threading.Thread(target=stream, args=(server.port,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        peak = before
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, server.rss())
            for thread in threads:
                thread.join(0.05)
        assert errors == []
        growth = peak - before
        assert growth < 40 * 1024 * 1024, f"grew by {growth / 1e6:.0f} MB"
        # Cut off after max_size bytes past the close, plus what the kernel
        # buffers on both sides held (several MB on loopback).
        assert per_connection, "no connection was cut off in 6 s"
        assert max(per_connection) < 32 * 1024 * 1024, per_connection
        # Still serving.
        assert json.loads(server.get("/health")[1])["status"] == "ok"
        with Raw(server.port) as ws:
            assert ws.read_event()["event"] == "pusher:connection_established"
            ws.sock.shutdown(socket.SHUT_WR)
