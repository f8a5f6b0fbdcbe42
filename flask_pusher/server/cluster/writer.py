"""The write queue of a node: the core's changes, in order, to Redis.

The backend queues operations (:class:`~.messages.Op` lists) synchronously;
one task sends them through the cluster's script, at most :data:`MAX_OPS` per
call, and tells whoever waits (a confirmation, an HTTP API answer) once what
was queued before them is written.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from .messages import Op
from .messages import pack

#: Changes sent to Redis in one script call at most.
MAX_OPS = 1000


class Writer:
    """The queue of operations and the task that writes them.

    :param write: runs the script on packed operations (a coroutine function).
    :param failed: called with the batch that failed and the error; the
        queue is then left to :meth:`drop`.
    :param is_up: whether Redis is reachable: nothing is written, and nobody
        waits, while it is not.
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[Any]],
        failed: Callable[[list[list[Any]], BaseException], None],
        is_up: Callable[[], bool],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self._write = write
        self._failed = failed
        self._is_up = is_up
        self._errors = errors
        self._ops: list[list[Any]] = []
        #: Changes queued since the start (a full state, ``sync``, not counted).
        self.queued = 0
        self._written = 0
        self._waiters: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()
        self._wake = asyncio.Event()

    def queue(self, op: list[Any]) -> None:
        """Queue one change."""
        self._ops.append(op)
        self.queued += 1
        self._wake.set()

    def sync(self, desired: list[list[Any]], first: bool) -> None:
        """Queue this node's whole state (not counted as a change): ``first``
        before every change queued (a reconnection), else after them."""
        op: list[Any] = [Op.SYNC, desired]
        if first:
            self._ops.insert(0, op)
        else:
            self._ops.append(op)
        self._wake.set()

    def after_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the changes queued so far are in Redis (at
        once if they are, or if Redis is unreachable)."""
        if not self._is_up() or self._written >= self.queued:
            callback()
        else:
            self._waiters.append((self.queued, callback))

    async def written(self) -> None:
        """Return once the changes queued so far are in Redis, or Redis is lost."""
        if not self._is_up() or self._written >= self.queued:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self._waiters.append((self.queued, wake))
        await done

    def release(self) -> None:
        """Answer everyone waiting, as if written (Redis is lost, or shutting down)."""
        self._wrote(self.queued)

    def drop(self) -> list[list[Any]]:
        """Empty the queue (Redis is lost) and :meth:`release`; return what it held."""
        dropped, self._ops = self._ops, []
        self.release()
        return dropped

    def _wrote(self, count: int) -> None:
        self._written = count
        waiters = self._waiters
        while waiters and waiters[0][0] <= count:
            waiters.popleft()[1]()

    async def run(self) -> None:
        """The writing task: runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops and self._is_up():
                ops = self._ops[:MAX_OPS]
                del self._ops[:MAX_OPS]
                try:
                    await self._write(pack(ops))
                except self._errors as exc:
                    self._failed(ops, exc)
                    break
                self._wrote(self._written + sum(1 for op in ops if op[0] != Op.SYNC))
