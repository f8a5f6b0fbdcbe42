"""What travels between a node and Redis, named and encoded in one place.

- :class:`Op`: the operations a node's writer sends to the cluster's script,
  one ``.lua`` file each in ``lua/`` (``[op, argument, ...]`` JSON lists);
- :class:`Kind` and :class:`Message`: what the script and the nodes publish
  on a node's pub/sub channel (``{"kind": ..., "app": ..., ...}`` JSON).

Named as python-socketio names its pub/sub messages
(``{"method": "emit", ...}``, https://github.com/miguelgrinberg/python-socketio,
``src/socketio/async_pubsub_manager.py``) and soketi its ``RequestType`` enum.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from dataclasses import field
from typing import Any


class Op(str, enum.Enum):
    """An operation of the cluster's script (``lua/<value>.lua``)."""

    SUBSCRIBE = "subscribe"
    MEMBER = "member"
    SIGNIN = "signin"
    JOIN = "join"
    MEMBERS = "members"
    CACHE_GET = "cache_get"
    CACHE_SET = "cache_set"
    WATCHLIST = "watchlist"
    PUBLISH = "publish"
    WEBHOOK = "webhook"
    ACK = "ack"
    SYNC = "sync"
    CONN = "conn"
    ADDR = "addr"


class Kind(str, enum.Enum):
    """The kind of a message on a node's pub/sub channel."""

    #: HTTP API events another node accepted (``events``: ``[[name, data, socket_id, channels]]``).
    EVENTS = "events"
    #: A client event's encoded ``frame`` for ``channel``.
    CLIENT_EVENT = "client_event"
    #: Close ``user``'s connections (4009).
    TERMINATE = "terminate"
    #: A presence member's first connection anywhere (``info`` JSON; ``exclude`` a socket id).
    MEMBER_ADDED = "member_added"
    #: A presence member's last connection anywhere is gone.
    MEMBER_REMOVED = "member_removed"
    #: ``channel``'s cluster-wide subscription ``count`` changed (``origin``: by whose change).
    COUNT = "count"
    #: ``user``'s first connection anywhere signed in.
    ONLINE = "online"
    #: ``user``'s last connection anywhere is gone.
    OFFLINE = "offline"
    #: The answer to a join (``members``: a flat ``[id, info, ...]`` list, absent if full).
    JOINED = "joined"
    #: The answer to a cache read (``value`` JSON ``[event, data]``, ``ttl`` in ms).
    CACHED = "cached"
    #: The answer to a watchlist read (``online``: the user ids online).
    WATCHLIST = "watchlist"


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded pub/sub message; which fields are set depends on :attr:`kind`."""

    kind: Kind
    app: str
    origin: str = ""
    channel: str = ""
    user: str = ""
    info: str = "null"
    exclude: str = ""
    socket: str = ""
    number: int = 0
    members: Any = None
    count: int = 0
    frame: str = ""
    events: list[Any] = field(default_factory=list)
    value: Any = None
    ttl: Any = None
    online: Any = None


def encode(kind: Kind, app: str, **fields: Any) -> str:
    """A message's JSON text."""
    return json.dumps({"kind": kind.value, "app": app, **fields})


def decode(text: str) -> Message:
    """A message from its JSON text.

    :raises ValueError: not a message (bad JSON, an unknown kind).
    :raises TypeError: a field no message has.
    """
    fields = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError("a message is a JSON object")
    kind = Kind(fields.pop("kind", None))
    return Message(kind, **fields)


def pack(ops: list[list[Any]]) -> bytes:
    """The script's JSON list of operations: UTF-8, lone surrogates passed as
    bytes (cjson decodes a ``\\ud800`` escape as an error, raw bytes as they are)."""
    return json.dumps(ops, ensure_ascii=False).encode("utf-8", "surrogatepass")
