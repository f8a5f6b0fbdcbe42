"""The supervisor of ``run(workers=N)``: N server processes on one port.

Each worker is a process of :mod:`multiprocessing`'s *spawn* context running
:func:`flask_pusher.server.serve.run`'s foreground server with ``SO_REUSEPORT``
(the kernel spreads connections among them, as gunicorn's and uvicorn's
``--workers`` do, https://docs.gunicorn.org/en/stable/design.html). The parent
serves nothing: it reports each worker's start through a pipe, passes SIGINT
and SIGTERM on as SIGTERM, and restarts a worker that dies, with a doubling
delay while it keeps dying soon after its start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from .config import AppConfig

log = logging.getLogger("flask_pusher.server")

#: Seconds a worker may take to listen before the parent gives up on it.
WORKER_START_TIMEOUT = 60.0
#: Seconds the parent waits, after ``shutdown_delay``, for the workers to shut
#: down after SIGTERM before it kills them (each takes at most 2 s).
WORKER_STOP_TIMEOUT = 15.0

#: The first restart delay of a worker that died, doubled while it keeps
#: dying within RESTART_STABLE seconds of its start, up to RESTART_MAX.
RESTART_MIN = 0.5
RESTART_MAX = 30.0
RESTART_STABLE = 10.0
#: What a worker sends its parent once it listens; anything else is why it did not.
_STARTED = "started"


class WorkerError(RuntimeError):
    """A worker of :func:`run` did not start, or ``run(workers=N)`` was called
    off the main thread."""


def _worker(
    apps: Sequence[AppConfig],
    host: str,
    port: int,
    debug: bool,
    options: dict[str, Any],
    pipe: Connection,
) -> None:
    """A worker process's body: serve, and tell the parent through ``pipe``
    once listening, or why not."""
    # Ctrl-C reaches the whole process group: until the worker's own handler is
    # in place, leave it to the parent, which answers with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import eventloop
    from .serve import _configure_logging
    from .serve import _serve

    _configure_logging(debug, options["node"])
    told = False

    def started() -> None:
        nonlocal told
        pipe.send(_STARTED)
        told = True

    try:
        eventloop.run(_serve(apps, host, port, options, started), options["loop"])
    except Exception as exc:
        if told:
            raise
        pipe.send(f"{exc.__class__.__name__}: {exc}")
        sys.exit(1)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclasses.dataclass
class _Slot:
    """One worker's place: its process, the pipe it reports its start on,
    when it started, and when and after what delay it restarts."""

    node: str
    process: BaseProcess | None = None
    pipe: Connection | None = None
    started_at: float = 0.0
    delay: float = RESTART_MIN
    restart_at: float | None = None


class Supervisor:
    """The parent of ``run(workers=N)``: see :func:`run`."""

    def __init__(
        self,
        apps: Sequence[AppConfig],
        host: str,
        port: int,
        debug: bool,
        options: dict[str, Any],
        workers: int,
    ) -> None:
        self.args = (tuple(apps), host, port, debug)
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        base = options.get("node") or f"{socket.gethostname()}:{port}"
        self.slots = [_Slot(f"{base}/{i}") for i in range(1, workers + 1)]
        self.stopping = False

    def run(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise WorkerError("run(workers=N) must be called from the main thread")
        # Signals wake the supervisor through this pair (signal.set_wakeup_fd).
        self.signals, self.wakeup = socket.socketpair()
        for sock in (self.signals, self.wakeup):
            sock.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self.wakeup.fileno())
        try:
            try:
                for slot in self.slots:
                    self._start(slot)
                self._wait_started()
                if not self.stopping:
                    apps, host, port, _ = self.args
                    from .serve import _announce

                    _announce(host, port, apps, self.options)
                    log.info(
                        "Workers: %s",
                        ", ".join(
                            f"{s.node} (pid {s.process.pid})" for s in self.slots if s.process
                        ),
                    )
                    self._supervise()
            except BaseException:
                self._stop_all()
                raise
            failed = self._stop_all()
            if failed:
                raise WorkerError("; ".join(failed))
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.signals.close()
            self.wakeup.close()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _drain_signals(self) -> None:
        try:
            while self.signals.recv(512):
                pass
        except BlockingIOError:
            pass

    def _start(self, slot: _Slot) -> None:
        receive, send = self.context.Pipe(duplex=False)
        options = {**self.options, "node": slot.node}
        process = self.context.Process(
            target=_worker,
            args=(*self.args, options, send),
            name=f"flask-pusher worker {slot.node}",
        )
        process.start()
        send.close()
        slot.process, slot.pipe = process, receive
        slot.started_at = time.monotonic()
        slot.restart_at = None

    def _report(self, slot: _Slot) -> str | None:
        """What the worker said on its pipe: ``None`` once started, else why
        it did not start (``None`` too if it had nothing to say yet)."""
        assert slot.pipe is not None
        try:
            message: str = slot.pipe.recv()
        except (EOFError, OSError):
            message = "it exited before listening"
        slot.pipe.close()
        slot.pipe = None
        return None if message == _STARTED else message

    def _wait_started(self) -> None:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while not self.stopping and any(s.pipe is not None for s in self.slots):
            waiting = {s.pipe: s for s in self.slots if s.pipe is not None}
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                nodes = ", ".join(s.node for s in waiting.values())
                raise WorkerError(
                    f"worker {nodes} did not listen on port {self.args[2]}"
                    f" within {WORKER_START_TIMEOUT:g} s"
                )
            ready = wait([*waiting, self.signals], remaining)
            self._drain_signals()
            for pipe, slot in waiting.items():
                if pipe not in ready:
                    continue
                problem = self._report(slot)
                if problem is not None:
                    raise WorkerError(f"worker {slot.node} did not start: {problem}")

    def _supervise(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for slot in self.slots:
                if slot.restart_at is not None and slot.restart_at <= now:
                    self._start(slot)
            due = [s.restart_at for s in self.slots if s.restart_at is not None]
            timeout = max(0.0, min(due) - now) if due else None
            objects: dict[Any, tuple[str, _Slot]] = {}
            for slot in self.slots:
                if slot.process is not None:
                    objects[slot.process.sentinel] = ("exit", slot)
                if slot.pipe is not None:
                    objects[slot.pipe] = ("report", slot)
            ready = wait([*objects, self.signals], timeout)
            self._drain_signals()
            for item in ready:
                if item is self.signals:
                    continue
                what, slot = objects[item]
                if what == "report" and slot.pipe is not None:
                    problem = self._report(slot)
                    if problem is not None:
                        log.warning("Worker %s did not start: %s", slot.node, problem)
                    elif slot.process is not None:
                        log.info("Worker %s restarted (pid %s)", slot.node, slot.process.pid)
                elif what == "exit" and slot.process is not None and not self.stopping:
                    self._schedule_restart(slot)

    def _schedule_restart(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None
        process.join()
        now = time.monotonic()
        if now - slot.started_at >= RESTART_STABLE:
            slot.delay = RESTART_MIN
        log.warning(
            "Worker %s (pid %d) %s; restarting it in %g s",
            slot.node,
            process.pid,
            _exit_reason(process.exitcode),
            slot.delay,
        )
        slot.restart_at = now + slot.delay
        slot.delay = min(slot.delay * 2, RESTART_MAX)
        slot.process = None
        if slot.pipe is not None:
            slot.pipe.close()
            slot.pipe = None

    def _stop_all(self) -> list[str]:
        """SIGTERM to every worker, then wait for them (kill them after
        ``shutdown_delay`` + WORKER_STOP_TIMEOUT seconds, or at a second
        signal); return what went wrong with each that did not stop cleanly."""
        live = [s for s in self.slots if s.process is not None and s.process.exitcode is None]
        for slot in live:
            assert slot.process is not None and slot.process.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGTERM)
        self.stopping = False  # from here on, a signal means "hurry"
        limit = float(self.options.get("shutdown_delay") or 0) + WORKER_STOP_TIMEOUT
        deadline = time.monotonic() + limit
        while True:
            running = [s.process for s in live if s.process and s.process.exitcode is None]
            remaining = deadline - time.monotonic()
            if not running or remaining <= 0 or self.stopping:
                break
            wait([*(p.sentinel for p in running), self.signals], remaining)
            self._drain_signals()
        failed = []
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            if process.exitcode is None:
                log.warning("Worker %s (pid %d) did not stop: killing it", slot.node, process.pid)
                process.kill()
            process.join()
            if process.exitcode not in (0, -signal.SIGTERM):
                failed.append(f"worker {slot.node} {_exit_reason(process.exitcode)}")
            slot.process = None
            if slot.pipe is not None:
                slot.pipe.close()
                slot.pipe = None
        return failed


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
