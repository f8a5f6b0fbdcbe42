"""A node's heartbeat: it is alive, held webhooks come due, dead nodes are reaped.

Every :data:`BEAT_INTERVAL` seconds (fewer with a short node timeout) the
script's ``beat`` (``lua/beat.lua``) records this node as alive, moves the
``channel_vacated``/``member_removed`` webhooks whose delay is over to the
stream, and reaps the nodes silent for the node timeout (their counts removed
as if their clients had left); this node then claims the webhook events they
had taken. A node reaped while alive (a long pause) writes its state again.
As Centrifuge refreshes its presence entries from live nodes
(https://github.com/centrifugal/centrifuge, ``presence_redis.go``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING

from .stream import ADOPT_EVERY

if TYPE_CHECKING:
    from .backend import RedisBackend

log = logging.getLogger("flask_pusher.server.cluster")

#: Seconds between two heartbeats of a node (fewer with a short node timeout).
BEAT_INTERVAL = 1.0


async def beat_forever(backend: RedisBackend) -> None:
    """The heartbeat task of ``backend``'s node: runs until cancelled."""
    from .backend import REDIS_ERRORS

    interval = min(BEAT_INTERVAL, backend.node_timeout / 3)
    timeout_ms = int(backend.node_timeout * 1000)
    for beat in itertools.count(1):
        await asyncio.sleep(interval)
        if not backend.up:
            continue
        try:
            existed, dead, drops = await backend.script(args=backend.args("beat", timeout_ms))
            backend.stream.dropped(drops)
            if not existed and backend.up:
                # Reaped while this node could not beat: put its state back,
                # after the changes queued (they are in the state it writes).
                log.warning("node %s was taken for dead: re-registering", backend.node_id)
                backend.writer.sync(backend.desired(), first=False)
            for node in dead:
                log.warning("node %s stopped answering: its connections were removed", node)
                await backend.stream.claim(node)
            if beat % ADOPT_EVERY == 0:
                await backend.stream.adopt()
        except REDIS_ERRORS as exc:
            backend.lost(exc)
            continue
        backend.flush_count_hooks()
