"""Signed-in users: ``pusher:signin``, ``#server-to-user-<id>`` and watchlists.

As pusher-js 8 does them (``src/core/user.ts``, ``src/core/watchlist.ts``) and
https://pusher.com/docs/channels/server_api/authenticating-users/ describes; a
watchlist over the limit gets ``pusher:error`` 4302. Functions take the connection and the
:class:`~flask_pusher.server.core.Effects` to fill, like the rest of the core; who
else learns that a user came online or went offline is the backend's decision
(:meth:`~flask_pusher.server.backend.Backend.signed_in`, ``signed_out``).
"""

from __future__ import annotations

import logging
from typing import Any
from typing import TYPE_CHECKING

from .. import names
from . import protocol
from .events import ProtocolError
from .events import SigninSuccess
from .events import SubscriptionRefused
from .events import SubscriptionSucceeded
from .events import WatchlistEvents
from .signing import check_auth

if TYPE_CHECKING:
    from .backend import Backend
    from .state import AppState
    from .state import Connection
    from .state import Effects

log = logging.getLogger("flask_pusher.server")


def signin(conn: Connection, data: Any, effects: Effects, backend: Backend) -> None:
    """Handle ``pusher:signin``: verify, register, answer, notify watchers."""
    app = conn.app
    config = app.config
    if not config.enable_user_authentication:
        effects.send(conn, ProtocolError("User authentication is not enabled for this app"))
        return
    if not isinstance(data, dict) or not isinstance(data.get("user_data"), str):
        effects.send(conn, ProtocolError("pusher:signin needs auth and user_data strings"))
        return
    user_data: str = data["user_data"]
    error = check_auth(config, data.get("auth"), f"{conn.socket_id}::user::{user_data}")
    parsed: Any = None
    if error is None:
        try:
            parsed = protocol.loads(user_data)
        except protocol.DepthError as exc:
            error = f"user_data: {exc}"
        except ValueError:
            error = "user_data must be a JSON string"
    if error is None and (
        not isinstance(parsed, dict) or not isinstance(parsed.get("id"), str) or not parsed["id"]
    ):
        error = "user_data must hold a non-empty string id"
    if error is not None:
        effects.send(conn, ProtocolError(f"Signin failed: {error}"))
        log.debug("signin refused for %s: %s", conn.socket_id, error)
        return
    assert isinstance(parsed, dict)
    user_id: str = parsed["id"]
    if conn.user_id is not None:
        signout(conn, effects, backend)
    watchlist_raw = parsed.get("watchlist") or []
    if not isinstance(watchlist_raw, list):
        watchlist_raw = []
    watchlist = [str(w) for w in watchlist_raw if isinstance(w, (str, int))]
    conn.user_id = user_id
    conn.user_info = parsed.get("user_info")
    first = user_id not in app.users
    app.users.setdefault(user_id, set()).add(conn)
    effects.send(conn, SigninSuccess(user_data))
    log.debug("signed in %s as %s", conn.socket_id, user_id)
    if len(watchlist) > config.max_watchlist:
        watchlist = watchlist[: config.max_watchlist]
        message = f"Watchlist limit exceeded ({config.max_watchlist} user ids at most)"
        effects.send(conn, ProtocolError(message, 4302))
    conn.watchlist = tuple(dict.fromkeys(watchlist))
    for watched in conn.watchlist:
        app.watchers.setdefault(watched, set()).add(conn)
    backend.signed_in(conn, first, effects)


def watch_state(conn: Connection, online: set[str], effects: Effects) -> None:
    """Tell ``conn`` which users of its watchlist are ``online`` and which not."""
    if not conn.watchlist or conn.closing:
        return
    on = [w for w in conn.watchlist if w in online]
    off = [w for w in conn.watchlist if w not in online]
    events = [(n, ids) for n, ids in (("online", on), ("offline", off)) if ids]
    effects.send(conn, WatchlistEvents(events))


def notify_watchers(app: AppState, user_id: str, online: bool, effects: Effects) -> None:
    """Tell the connections watching ``user_id`` that the user came online or went offline."""
    targets = list(app.watchers.get(user_id, ()))
    kind = "online" if online else "offline"
    effects.broadcast(targets, WatchlistEvents([(kind, [user_id])]))


def signout(conn: Connection, effects: Effects, backend: Backend) -> None:
    """Forget the user of ``conn``; the last connection of a user goes offline."""
    user_id = conn.user_id
    if user_id is None:
        return
    app = conn.app
    for watched in conn.watchlist:
        watchers = app.watchers.get(watched)
        if watchers is not None:
            watchers.discard(conn)
            if not watchers:
                del app.watchers[watched]
    conn.channels.discard(names.SERVER_TO_USER_PREFIX + user_id)
    conn.user_id = None
    conn.user_info = None
    conn.watchlist = ()
    conns = app.users.get(user_id)
    if conns is None:
        return
    conns.discard(conn)
    last = not conns
    if last:
        del app.users[user_id]
    backend.signed_out(app, user_id, last, effects)


def subscribe_server_to_user(conn: Connection, name: str, effects: Effects) -> None:
    """Allow ``#server-to-user-<id>`` only to connections signed in as ``id``."""
    user_id = name[len(names.SERVER_TO_USER_PREFIX) :]
    if conn.user_id != user_id:
        message = f"Only a connection signed in as {user_id!r} may subscribe to {name}"
        effects.send(conn, SubscriptionRefused(name, message, 403))
        return
    conn.channels.add(name)
    effects.send(conn, SubscriptionSucceeded(name))
