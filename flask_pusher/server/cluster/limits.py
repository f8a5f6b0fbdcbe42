"""The app's limits across the nodes of a cluster (:mod:`flask_pusher.server.limits`).

A connection quota (``max_connections``) and the HTTP API's rates
(``max_backend_events_per_second``, ``max_read_requests_per_second``) count
every node's connections and requests: the cluster's script decides at once
(modes ``admit`` and ``take`` of ``lua/limits.lua``), outside the write queue,
since a handshake or a request waits for the answer. Each node keeps its own
connection count in its hash (field ``c\\n<app>``) beside the cluster's total
(``<prefix>:<app>:conns``), and its count per client address (field
``a\\n<app>\\n<address>``) beside the cluster's (hash
``<prefix>:<app>:addr``, for ``max_connections_per_address``), so a node
that dies is reaped of its connections as of its subscriptions, and a node
that reconnects writes its counts again.
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


#: What the script's mode ``admit`` answers, by its number (0: admitted).
FULL = (None, "max_connections", "max_connections_per_address")


async def admit(backend: RedisBackend, app: AppState, address: str | None = None) -> str | None:
    """A slot of the app's ``max_connections`` and of ``address``'s
    ``max_connections_per_address`` from the cluster's counts; while Redis is
    away (or fails now), from this node's counts alone.

    :returns: ``None``: admitted; else the name of the full quota."""
    from .backend import REDIS_ERRORS

    config = app.config
    limit = config.max_connections
    per_address = config.max_connections_per_address if address is not None else None
    if limit is None and per_address is None:
        return None
    # After what is queued (the node's first sync, connections gone): a
    # count written later would undo this one.
    await backend.written()
    if backend.up:
        try:
            admission = [config.app_id, limit or 0, address or "", per_address or 0]
            args = backend.args("admit", json.dumps(admission))
            return FULL[int(await backend.script(args=args))]
        except REDIS_ERRORS as exc:
            log.debug("admission decided by this node alone: Redis failed (%s)", exc)
    return await backend.local.admit(app, address)


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
    """``conn`` is gone: give its slots of ``max_connections`` and
    ``max_connections_per_address`` back."""
    app = conn.app
    if not backend.up:
        return
    if app.config.max_connections is not None:
        backend.writer.queue([Op.CONN, app.config.app_id, -1])
    if conn.address is not None:
        backend.writer.queue([Op.ADDR, app.config.app_id, conn.address, -1])


def desired(app: AppState) -> list[list[Any]]:
    """This node's connection counts of ``app`` (in all, and by client
    address), as the script's ``sync`` takes them."""
    app_id = app.config.app_id
    counts: list[list[Any]] = []
    if app.config.max_connections is not None and app.connections:
        counts.append([f"c\n{app_id}", len(app.connections), None])
    for address, count in app.addresses.items():
        counts.append([f"a\n{app_id}\n{address}", count, None])
    return counts
