"""The Redis backend: many server processes as one Pusher app.

Imported only when a server is started with a Redis URL (``--redis``,
``PUSHER_SERVER_REDIS_URL``). :class:`RedisBackend` (also named
``Cluster``) is in :mod:`.backend`; see there for how the cluster works.
"""

from __future__ import annotations

from .backend import Cluster
from .backend import RedisBackend

__all__ = ["Cluster", "RedisBackend"]
