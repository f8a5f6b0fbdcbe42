"""Presence subscriptions waiting for the cluster's decision.

A presence subscription is decided in Redis (``lua/join.lua``: the member
limit, the member's first connection anywhere), so the node keeps each
waiting one, numbered, until the answer with that number comes back on its
pub/sub channel (:attr:`~.messages.Kind.JOINED`); a client may unsubscribe,
subscribe again or leave meanwhile. While Redis is away the waiting ones are
completed with what the node knows, as one server would.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any
from typing import TYPE_CHECKING

from ..events import SubscriptionSucceeded
from ..state import Effects
from .messages import Message
from .messages import Op

if TYPE_CHECKING:
    from ..core import Core
    from ..state import AppState
    from ..state import Connection


class _Join:
    """A presence subscription waiting for the cluster's answer."""

    __slots__ = ("again", "cancelled", "conn", "name", "user_id", "user_info")

    def __init__(
        self, conn: Connection, name: str, user_id: str, user_info: Any, again: bool
    ) -> None:
        self.conn = conn
        self.name = name
        self.user_id = user_id
        self.user_info = user_info
        self.again = again  # already subscribed: only the member list is asked
        self.cancelled = False


class Joins:
    """The joins of one node waiting for Redis.

    :param core: the node's core (``join_done`` answers a join).
    :param apply: applies effects.
    :param queue: queues an operation for the writer.
    :param leave: counts a member out again (``(app, channel, user_id)``).
    """

    def __init__(
        self,
        core: Core,
        apply: Callable[[Effects], None],
        queue: Callable[[list[Any]], None],
        leave: Callable[[AppState, str, str | None], None],
    ) -> None:
        self.core = core
        self.apply = apply
        self.queue = queue
        self.leave = leave
        #: Joins waiting, by number (the answer carries it), and the number
        #: of the latest one of each (app, socket id, channel).
        self._joins: dict[int, _Join] = {}
        self._waiting: dict[tuple[str, str, str], int] = {}
        self._numbers = itertools.count(1)

    def ask(self, conn: Connection, name: str, user_id: str, user_info: Any, again: bool) -> None:
        """Ask the cluster to add ``conn`` to presence channel ``name`` (or,
        ``again``, for the members of a channel it is subscribed to);
        :meth:`answered` completes it."""
        app_id = conn.app.config.app_id
        key = (app_id, conn.socket_id, name)
        number = self._waiting.get(key)
        if number is not None:
            waiting = self._joins[number]
            if again or not waiting.again:
                waiting.cancelled = False  # subscribed, unsubscribed, subscribed again
                return
            # Only the members were asked (a repeat, since unsubscribed): that
            # is still answered, and this subscription joins for real.
        number = next(self._numbers)
        self._joins[number] = _Join(conn, name, user_id, user_info, again)
        self._waiting[key] = number
        if again:
            self.queue([Op.MEMBERS, app_id, name, conn.socket_id, number])
            return
        limit = conn.app.config.max_presence_members
        info = json.dumps(user_info)
        self.queue([Op.JOIN, app_id, name, user_id, info, conn.socket_id, limit, number])

    def cancel(self, conn: Connection, name: str) -> None:
        """``conn`` unsubscribed from ``name`` before the cluster answered."""
        number = self._waiting.get((conn.app.config.app_id, conn.socket_id, name))
        if number is not None:
            self._joins[number].cancelled = True

    def disconnected(self, conn: Connection) -> None:
        """``conn`` is gone: its joins still waiting are cancelled."""
        for join in self._joins.values():
            if join.conn is conn:
                join.cancelled = True

    def answered(self, app: AppState, message: Message) -> None:
        """The cluster's answer to a join (a :attr:`~.messages.Kind.JOINED` message)."""
        name, number = message.channel, message.number
        join = self._joins.pop(number, None)
        if join is None:
            return
        key = (app.config.app_id, message.socket, name)
        if self._waiting.get(key) == number:
            del self._waiting[key]
        flat = message.members
        conn = join.conn
        if join.again:  # a repeated subscribe: confirmed, as one server does
            if not conn.closing and flat is not None:
                listed = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
                self.confirm(conn, name, listed)
            return
        if join.cancelled or conn.closing:
            if flat is not None:  # it was counted: count it out
                self.leave(app, name, join.user_id)
            return
        members = None
        if flat is not None:
            members = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        self.apply(self.core.join_done(conn, name, join.user_id, join.user_info, members))

    def confirm(self, conn: Connection, name: str, members: dict[str, Any]) -> None:
        """Confirm a repeated presence subscription with ``members``."""
        effects = Effects()
        effects.send(conn, SubscriptionSucceeded(name, members))
        self.apply(effects)

    def complete_locally(self) -> None:
        """Redis is lost: complete every waiting join with what this node knows."""
        joins, self._joins = self._joins, {}
        self._waiting.clear()
        for join in joins.values():
            conn, name = join.conn, join.name
            if join.cancelled or conn.closing:
                continue
            members = conn.app.members(name)
            if join.again:
                self.confirm(conn, name, members)
                continue
            members.setdefault(join.user_id, join.user_info)
            self.apply(self.core.join_done(conn, name, join.user_id, join.user_info, members))
