"""Run the commands README.rst tells a newcomer to paste, as written, in a fresh clone.

The commands are read from README.rst's "Try it" and "Run the tests" sections
(every ``$ `` line of their ``console`` code blocks), so the README and this check
cannot drift apart:

- the README's first command, the project's main job, must bring the example chat
  up: it is run in a fresh clone, and the check waits for the chat's sign-in page on
  http://127.0.0.1:5000/ and then stops the command's whole process group;
- the test command (the one that runs tox) is run by ``.ci/run`` itself, in the
  clean clone CI already has (``readme.py test-command`` prints it);
- every other command is run in a fresh clone, inside a fresh virtual environment
  (the README says "a virtual environment of your own"), and must exit 0.

A failure prints which command failed, why, and the command's last lines of
output, and exits 1. Standard library only: it runs before anything is installed.

Usage: ``python3 .ci/readme.py check`` or ``python3 .ci/readme.py test-command``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("Try it", "Run the tests")
CHAT_URL = "http://127.0.0.1:5000/"
CHAT_PORT = 5000
SIGN_IN_MARK = "Join the chat"  # examples/chat/templates/signin.html
INSTALL_TIMEOUT = 900.0  # seconds for a command that installs (pip from a warm cache)
TAIL = 40  # lines of output shown when a command fails


def sections(text: str) -> dict[str, str]:
    """README.rst's sections by title: reST titles underlined with ``-`` or ``=``."""
    found: dict[str, str] = {}
    lines = text.splitlines()
    starts = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and re.fullmatch(r"([-=~^])\1+", lines[i + 1].strip())
        and len(lines[i + 1].strip()) >= len(lines[i].strip())
    ]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        found[lines[start].strip()] = "\n".join(lines[start + 2 : end])
    return found


def console_commands(body: str) -> list[str]:
    """The ``$ `` lines of the ``.. code-block:: console`` blocks in ``body``."""
    commands: list[str] = []
    in_block = False
    for line in body.splitlines():
        if line.startswith(".. code-block::"):
            in_block = line.split("::", 1)[1].strip() == "console"
            continue
        if in_block and line.strip() and not line.startswith((" ", "\t")):
            in_block = False
        if in_block and line.strip().startswith("$ "):
            commands.append(line.strip()[2:].strip())
    return commands


def readme_commands(readme: Path = ROOT / "README.rst") -> list[str]:
    """Every distinct command of the "Try it" and "Run the tests" sections, in order.

    Raises SystemExit when a section is missing or has no command.
    """
    found = sections(readme.read_text(encoding="utf-8"))
    commands: list[str] = []
    for title in SECTIONS:
        if title not in found:
            fail(f"README.rst has no {title!r} section")
        block = console_commands(found[title])
        if not block:
            fail(f"README.rst's {title!r} section has no console command")
        commands += [c for c in block if c not in commands]
    return commands


def is_test_command(command: str) -> bool:
    return re.search(r"(^|&&\s*)tox\b", command) is not None


def is_chat_command(command: str) -> bool:
    return re.search(r"\bflask\b.*--app examples\.chat\b.*\brun\b", command) is not None


def fail(message: str, output: Path | None = None) -> None:
    print(f"readme check FAILED: {message}", file=sys.stderr)
    if output is not None and output.exists():
        with output.open(encoding="utf-8", errors="replace") as f:
            last = deque(f, maxlen=TAIL)
        print(f"--- the command's last {len(last)} lines of output ---", file=sys.stderr)
        sys.stderr.writelines(last)
        print("--- end of output ---", file=sys.stderr)
    raise SystemExit(1)


def fresh_clone(into: Path) -> Path:
    """A clone of this repository's committed HEAD, as a newcomer's ``git clone``."""
    clone = into / "flask-pusher"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    return clone


def newcomer_env() -> dict[str, str]:
    """The environment without any virtual environment or path this run set up."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv)
        )
    return env


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the command and everything it started, as Ctrl-C would, then harder."""
    for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            _wait_quietly(proc, 0.2)  # reaps the shell once it has ended
            try:
                os.killpg(proc.pid, 0)  # anyone of the group still there?
            except ProcessLookupError:
                return


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def check_chat(command: str, workdir: Path) -> None:
    """Run the chat command in a fresh clone; wait for the sign-in page; stop it."""
    if port_taken(CHAT_PORT):
        fail(f"port {CHAT_PORT} is taken by another process: cannot try {command!r}")
    clone = fresh_clone(workdir)
    output = workdir / "chat.log"
    print(f"$ {command}   (in a fresh clone; waiting for {CHAT_URL})", flush=True)
    started = time.monotonic()
    with output.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=clone,
            env=newcomer_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while True:
            if proc.poll() is not None:
                fail(f"{command!r} exited with {proc.returncode} before the chat answered", output)
            if time.monotonic() - started > INSTALL_TIMEOUT:
                fail(
                    f"the chat did not answer on {CHAT_URL} within {INSTALL_TIMEOUT:.0f} s", output
                )
            try:
                with urllib.request.urlopen(CHAT_URL, timeout=5) as response:
                    page = response.read().decode("utf-8", "replace")
            except (OSError, urllib.error.URLError):
                _wait_quietly(proc, 0.5)  # not up yet: poll again, or see it exit
                continue
            if SIGN_IN_MARK not in page:
                fail(f"{CHAT_URL} answered without the sign-in page ({SIGN_IN_MARK!r})", output)
            break
    finally:
        stop_group(proc)
    print(f"ok: the chat answered with its sign-in page after {time.monotonic() - started:.0f} s")


def _wait_quietly(proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait up to ``seconds`` for the process to end, without raising."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(seconds)


def check_exits_zero(command: str, workdir: Path) -> None:
    """Run ``command`` in a fresh clone inside a fresh virtual environment."""
    clone = fresh_clone(workdir)
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = newcomer_env()
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    output = workdir / "command.log"
    print(f"$ {command}   (in a fresh clone and a fresh virtual environment)", flush=True)
    started = time.monotonic()
    with output.open("wb") as log:
        try:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=clone,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            fail(f"{command!r} did not finish within {INSTALL_TIMEOUT:.0f} s", output)
    if done.returncode != 0:
        fail(f"{command!r} exited with {done.returncode}", output)
    print(f"ok: exited 0 after {time.monotonic() - started:.0f} s")


def check() -> None:
    commands = readme_commands()
    first = console_commands((ROOT / "README.rst").read_text(encoding="utf-8"))[0]
    if not is_chat_command(first):
        fail(f"the README's first command should start the example chat: {first!r}")
    if not any(is_test_command(c) for c in commands):
        fail("README.rst's 'Run the tests' section has no tox command")
    for command in commands:
        if is_test_command(command):
            continue  # .ci/run runs it, in the clean clone CI already has
        with tempfile.TemporaryDirectory(prefix="readme-") as tmp:
            if is_chat_command(command):
                check_chat(command, Path(tmp))
            else:
                check_exits_zero(command, Path(tmp))


def test_command() -> str:
    tests = [c for c in readme_commands() if is_test_command(c)]
    if len(tests) != 1:
        fail(f"README.rst should give one test command (tox), not {tests!r}")
    return tests[0]


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "check":
        check()
    elif what == "test-command":
        print(test_command())
    else:
        print(__doc__.rsplit("Usage:", 1)[1].strip(), file=sys.stderr)
        raise SystemExit(2)
