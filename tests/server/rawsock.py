"""Raw sockets for the hostile-client tests: WebSocket frames and HTTP bytes
written by hand, and a server in its own process whose memory can be read."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any

from .helpers import APP_ID
from .helpers import KEY
from .helpers import SECRET
from .redis_server import free_port

TIMEOUT = 10.0


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` masked with the 4-byte ``key`` (RFC 6455 §5.3)."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def frame_header(opcode: int, size: int, fin: bool = True, key: bytes = b"\0\0\0\0") -> bytes:
    """A masked client frame's header for a payload of ``size`` bytes (RFC 6455 §5.2)."""
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        return bytes((first, 0x80 | size)) + key
    if size < 65536:
        return struct.pack("!BBH", first, 0x80 | 126, size) + key
    return struct.pack("!BBQ", first, 0x80 | 127, size) + key


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A whole masked client frame."""
    key = os.urandom(4)
    return frame_header(opcode, len(payload), fin, key) + mask(payload, key)


class Raw:
    """A WebSocket client on a plain socket that reads only when asked to."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        path: str = f"/app/{KEY}",
        rcvbuf: int | None = None,
    ) -> None:
        """:param rcvbuf: ``SO_RCVBUF`` in bytes, set before connecting (a
        client that reads slowly)."""
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path}?protocol=7 HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        self.head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert self.head.startswith(b"HTTP/1.1 101"), self.head

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        return chunk

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one whole masked frame."""
        self.sock.sendall(frame(opcode, payload))

    def send_json(self, value: dict[str, Any]) -> None:
        self.send(0x1, json.dumps(value).encode())

    def read(self) -> tuple[int, bytes]:
        """The next frame's opcode and payload. :raises EOFError: at end of stream."""
        while True:
            if len(self.buffer) >= 2:
                size = self.buffer[1] & 0x7F
                start = 2
                if size == 126:
                    (size,), start = struct.unpack("!H", self.buffer[2:4]), 4
                elif size == 127:
                    (size,), start = struct.unpack("!Q", self.buffer[2:10]), 10
                if len(self.buffer) >= start + size:
                    opcode = self.buffer[0] & 0x0F
                    payload = self.buffer[start : start + size]
                    self.buffer = self.buffer[start + size :]
                    return opcode, payload
            self.buffer += self._recv()

    def read_event(self) -> dict[str, Any]:
        opcode, payload = self.read()
        assert opcode == 0x1, (opcode, payload)
        event: dict[str, Any] = json.loads(payload)
        return event

    def read_until_close(self) -> tuple[list[dict[str, Any]], int | None]:
        """Text frames until the server's Close frame, and its code (``None``: no
        Close frame before the end of the stream)."""
        events: list[dict[str, Any]] = []
        try:
            while True:
                opcode, payload = self.read()
                if opcode == 0x8:
                    return events, struct.unpack("!H", payload[:2])[0]
                if opcode == 0x1:
                    events.append(json.loads(payload))
        except EOFError:
            return events, None


class ServerProcess:
    """``python -m flask_pusher.server`` on a free port, in its own process."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "flask_pusher.server", "--port", str(self.port)]
        argv += ["--app-id", APP_ID, "--key", KEY, "--secret", SECRET, *args]
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, self.process.stderr and self.process.stderr.read()
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def rss(self) -> int:
        """The process's resident memory, in bytes (Linux ``/proc``)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def metric(self, name: str) -> float:
        """The sum of the samples of one metric at ``/metrics``."""
        total = 0.0
        for line in self.get("/metrics")[1].decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
