"""The app's limits across the nodes of a cluster (:mod:`flask_pusher.server.limits`).

A connection quota (``max_connections``) and the HTTP API's rates
(``max_backend_events_per_second``, ``max_read_requests_per_second``) count
every node's connections and requests: the cluster's script decides at once
(modes ``admit`` and ``take`` of ``lua/limits.lua``), outside the write queue,
since a handshake or a request waits for the answer. Each node keeps its own
connection count in its hash (field ``c\\n<app>``) beside the cluster's total
(``<prefix>:<app>:conns``), so a node that dies is reaped of its connections
as of its subscriptions, and a node that reconnects writes its count again.
While Redis is away a node decides from its own count: it keeps enforcing
every limit alone.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from typing import TYPE_CHECKING

from .messages import Op

if TYPE_CHECKING:
    from ..state import AppState
    from ..state import Connection
    from .backend import RedisBackend

log = logging.getLogger("flask_pusher.server.cluster")


async def admit(backend: RedisBackend, app: AppState) -> bool:
    """A slot of the app's ``max_connections`` from the cluster's count; while
    Redis is away (or fails now), from this node's count alone."""
    from .backend import REDIS_ERRORS

    limit = app.config.max_connections
    if limit is None:
        return True
    # After what is queued (the node's first sync, connections gone): a
    # count written later would undo this one.
    await backend.written()
    if backend.up:
        try:
            args = backend.args("admit", json.dumps([app.config.app_id, limit]))
            return bool(await backend.script(args=args))
        except REDIS_ERRORS as exc:
            log.debug("admission decided by this node alone: Redis failed (%s)", exc)
    return await backend.local.admit(app)


async def take(backend: RedisBackend, app: AppState, bucket: str, amount: int, limit: int) -> bool:
    """Add ``amount`` to this second's count of the app's ``bucket`` across
    the cluster; ``False`` over ``limit``. While Redis is away, this node's
    count alone."""
    from .backend import REDIS_ERRORS

    if backend.up:
        try:
            args = backend.args("take", json.dumps([app.config.app_id, bucket, amount, limit]))
            return bool(await backend.script(args=args))
        except REDIS_ERRORS as exc:
            log.debug("rate decided by this node alone: Redis failed (%s)", exc)
    return backend.local.take_now(app, bucket, amount, limit)


def released(backend: RedisBackend, conn: Connection) -> None:
    """``conn`` is gone: give its slot of ``max_connections`` back."""
    app = conn.app
    if app.config.max_connections is not None and backend.up:
        backend.writer.queue([Op.CONN, app.config.app_id, -1])


def desired(app: AppState) -> list[list[Any]]:
    """This node's connection count of ``app``, as the script's ``sync`` takes it."""
    if app.config.max_connections is None or not app.connections:
        return []
    return [[f"c\n{app.config.app_id}", len(app.connections), None]]
