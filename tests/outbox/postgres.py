"""A real PostgreSQL server for the outbox tests (issue 17: "a real PostgreSQL
server started by the test fixtures"), like ``tests/server/redis_server.py``.

Debian's ``postgresql`` package puts ``initdb`` and ``postgres`` in
``/usr/lib/postgresql/<version>/bin``. One server per session, in a temporary
directory, on a free port of 127.0.0.1, its unix socket in that directory, no
fsync. ``initdb`` and ``postgres`` refuse to run as root: as root they run as the
``postgres`` user (or ``nobody``), which then owns the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.needs import unavailable
from tests.server.redis_server import free_port

#: Seconds to wait for the server to accept connections.
TIMEOUT = 30.0


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb``, or ``initdb`` on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """One ``postgres`` process; :attr:`url` is an SQLAlchemy URL for psycopg 3."""

    def __init__(self, directory: Path, bindir: Path) -> None:
        self.directory = directory
        self.bindir = bindir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                break

    @classmethod
    def for_tests(cls, directory: Path) -> PostgresServer:
        """Start one, or skip (fail under CI) when the binaries or psycopg are missing."""
        try:
            import psycopg  # noqa: F401
        except ImportError:
            unavailable("psycopg is not installed (dependency group 'test').")
        bindir = postgres_bin()
        if bindir is None:
            unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql).")
        server = cls(directory, bindir)
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def uid(self) -> int | None:
        return pwd.getpwnam(self.user).pw_uid if self.user else None

    @property
    def gid(self) -> int | None:
        return pwd.getpwnam(self.user).pw_gid if self.user else None

    def start(self) -> None:
        data = self.directory / "data"
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            # The directory must be reachable by that user: the fixture puts it
            # in the system's temporary directory (``/tmp``), never in a home.
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            self.directory.chmod(0o700)
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.directory,
            user=self.uid,
            group=self.gid,
            extra_groups=[] if self.user else None,
        )
        log = open(self.directory / "postgres.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.directory),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            user=self.uid,
            group=self.gid,
            extra_groups=[] if self.user else None,
        )
        log.close()
        import psycopg

        deadline = time.monotonic() + TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    "postgres exited: " + (self.directory / "postgres.log").read_text()[-2000:]
                )
            try:
                psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="postgres",
                    dbname="postgres",
                    connect_timeout=1,
                ).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # polling a starting process: no event to wait on

    def create_database(self, name: str) -> str:
        """A fresh database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown (SIGTERM waits for clients)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
