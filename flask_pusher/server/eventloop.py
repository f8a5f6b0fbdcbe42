"""The event loop the server runs on: uvloop when chosen or installed, else asyncio's.

uvloop (https://github.com/MagicStack/uvloop) is a drop-in replacement of
asyncio's loop on libuv; the server uses nothing but the asyncio API, so either
runs it. ``auto`` takes uvloop when it can be imported.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any

from ..server_options import LOOPS

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory:
    """The function that makes a new loop of ``choice``.

    :param choice: one of :data:`~flask_pusher.server_options.LOOPS`
        (``--loop``, ``PUSHER_SERVER_LOOP``).
    :raises RuntimeError: for ``"uvloop"`` when uvloop cannot be imported.
    :raises ValueError: for a choice not in ``LOOPS``.
    """
    if choice not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, not {choice!r}.")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError(
                "--loop uvloop (PUSHER_SERVER_LOOP = 'uvloop') needs uvloop, which is"
                " not installed: pip install 'Flask-Pusher[server]' (or uvloop), or"
                " choose --loop asyncio."
            ) from None
        return asyncio.new_event_loop
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, None], choice: str) -> None:
    """Run ``main`` to its end on a new loop of ``choice``, as :func:`asyncio.run`
    does (then cancel what is left, close async generators and the loop).

    :raises RuntimeError: as :func:`loop_factory`.
    """
    factory = loop_factory(choice)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)
        return
    loop = factory()  # pragma: no cover - Python 3.10
    try:  # pragma: no cover
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    finally:  # pragma: no cover
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()
