"""A real ``redis-server`` for the cluster's tests (issue 8: "a real Redis server
started by the test fixtures").

::

    server = RedisServer(tmp_path).start()   # a free port on 127.0.0.1
    server.url                               # "redis://127.0.0.1:PORT/0"
    server.client().ping()                   # a sync redis.Redis (decoded strings)
    server.stop()                            # clean shutdown (SIGTERM), nothing saved
    server.restart()                         # up again on the same port
    server.kill()                            # SIGKILL: as a crash
    server.start()                           # also the same port once it has one

No persistence (``--save ""``, ``--appendonly no``): a restart comes back empty,
as a Redis that lost its memory. The fixtures are in ``tests/server/conftest.py``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

#: Seconds to wait for redis-server to answer PING, or to exit.
TIMEOUT = 10.0


def redis_server_binary() -> str | None:
    """The path of ``redis-server`` on PATH (Debian's package), or ``None``."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, its files in ``directory``.

    :param directory: where its log goes (``redis-PORT.log``); a test's ``tmp_path``.
    :param port: the port; ``None`` picks a free one at the first :meth:`start`,
        kept for every later start.
    :param binary: the ``redis-server`` to run; default the one on PATH.
    :raises RuntimeError: if there is no ``redis-server`` binary.
    """

    def __init__(self, directory: Path, port: int | None = None, binary: str | None = None) -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise RuntimeError("no redis-server on PATH (Debian: apt-get install redis-server)")
        self.binary = found
        self.directory = Path(directory)
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``: what ``--redis`` takes."""
        if self.port is None:
            raise RuntimeError("RedisServer has no port until start()")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def start(self) -> RedisServer:
        """Start it and wait until it answers PING (at most :data:`TIMEOUT` s).

        :raises RuntimeError: if it is running already, or exits or does not
            answer in time (the message ends with its log).
        """
        if self.running:
            raise RuntimeError(f"redis-server is already running on port {self.port}")
        tries = 1 if self.port is not None else 3  # a picked port may be taken meanwhile
        while True:
            port = self.port or free_port()
            try:
                self._launch(port)
            except RuntimeError:
                tries -= 1
                if tries == 0:
                    raise
                continue
            self.port = port
            return self

    def _launch(self, port: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        command += ["--dir", str(self.directory)]
        command += ["--logfile", str(self.directory / f"redis-{port}.log")]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        probe = redis.Redis(host=self.host, port=port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + TIMEOUT
        try:
            while True:
                if self.process.poll() is not None:
                    break
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)  # polling a condition, bounded by the deadline
        finally:
            probe.close()
        self._end(signal.SIGKILL)
        log = self.directory / f"redis-{port}.log"
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not answer PING on port {port}:\n{text}")

    def stop(self) -> None:
        """Shut it down cleanly (SIGTERM) and wait; nothing is saved. No-op if stopped."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill it (SIGKILL), as a crash, and wait. No-op if stopped."""
        self._end(signal.SIGKILL)

    def restart(self) -> RedisServer:
        """Stop it if it runs, then start it again on the same port (empty)."""
        self.stop()
        return self.start()

    def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)

    def client(self, **kwargs: object) -> redis.Redis:
        """A sync ``redis.Redis`` for this server (``decode_responses=True``
        unless given); closed by :meth:`close`."""
        options: dict[str, object] = {"decode_responses": True, **kwargs}
        client = redis.Redis.from_url(self.url, **options)
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Close the clients and stop the server."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.stop()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"
