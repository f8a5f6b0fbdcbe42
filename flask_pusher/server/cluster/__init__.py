"""The Redis backend: many server processes as one Pusher app.

Imported only when a server is started with a Redis URL (``--redis``,
``PUSHER_SERVER_REDIS_URL``). :class:`RedisBackend` (also named
``Cluster``) is in :mod:`.backend`; see there for how the cluster works.
"""

from __future__ import annotations

from .backend import RedisBackend

#: The name :class:`RedisBackend` had before the backend seam (issue 15).
Cluster = RedisBackend

__all__ = ["Cluster", "RedisBackend"]
