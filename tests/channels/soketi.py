"""soketi 1.6.1 (npm ``@soketi/soketi``) as a third-party Pusher server for the
client's interop tests (reference pusher-servers §3): one process per test
module, on a free port of 127.0.0.1, with client events and user authentication on."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .scripted import free_port

ROOT = Path(__file__).resolve().parents[2]
SOKETI = ROOT / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
APP_ID, KEY, SECRET = "4242", "soketi-key", "soketi-secret"


class Soketi:
    """A running soketi: ``host``, ``port`` and the app's credentials."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "SOKETI_HOST": self.host,
            "SOKETI_PORT": str(self.port),
            "SOKETI_METRICS_ENABLED": "false",
            "SOKETI_METRICS_SERVER_PORT": str(free_port()),
            "SOKETI_DEFAULT_APP_ID": APP_ID,
            "SOKETI_DEFAULT_APP_KEY": KEY,
            "SOKETI_DEFAULT_APP_SECRET": SECRET,
            "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
            "SOKETI_DEFAULT_APP_USER_AUTHENTICATION": "true",
        }
        self.proc = subprocess.Popen(
            ["node", str(SOKETI), "start"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(30.0)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"soketi exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(
                    f"http://{self.host}:{self.port}/ready", timeout=1
                ) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)  # poll until it listens: no event to wait on across processes
        self.stop()
        raise RuntimeError("soketi did not become ready in 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def available() -> bool:
    import shutil

    return shutil.which("node") is not None and SOKETI.is_file()
