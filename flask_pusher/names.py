"""Pusher Channels names and limits shared by the extension and the server.

Dependency-free (the standard library's :mod:`re` only), so that the extension
imports it without the server, and the server without Flask. Sources:

- channel names and their limits: Pusher's "Channels naming conventions"
  (https://pusher.com/docs/channels/using_channels/channels/#channel-naming-conventions);
- socket ids: pusher-js ``src/core/connection/protocol/protocol.ts`` reads the
  ``socket_id`` of ``pusher:connection_established``; Pusher's own are
  ``digits.digits``;
- webhook event types: https://pusher.com/docs/channels/server_api/webhooks/;
- ``#server-to-user-``: pusher-js ``src/core/user.ts``.
"""

from __future__ import annotations

import re

#: A socket id: ``digits.digits``, ASCII digits only, at most 20 on each side.
SOCKET_ID_RE = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}")
#: The characters allowed in channel names and user ids.
NAME_CHARS = "A-Z a-z 0-9 _ - = @ , . ;"
#: A channel name or user id: 1 to 200 of :data:`NAME_CHARS`.
NAME_RE = re.compile(r"[-a-zA-Z0-9_=@,.;]{1,200}")
#: The longest channel name, event name or user id, in characters.
MAX_NAME_LENGTH = 200

PRIVATE_PREFIX = "private-"
PRESENCE_PREFIX = "presence-"
ENCRYPTED_PREFIX = "private-encrypted-"
#: The channels that need channel authorization.
AUTHORIZED_PREFIXES = (PRIVATE_PREFIX, PRESENCE_PREFIX)
#: Cache channels keep their last event (https://pusher.com/docs/channels/using_channels/cache-channels/).
CACHE_PREFIXES = (
    "cache-",
    "private-cache-",
    "private-encrypted-cache-",
    "presence-cache-",
)
#: The channel pusher-js joins after signin to receive ``send_to_user`` events.
SERVER_TO_USER_PREFIX = "#server-to-user-"
#: Events a client may send to other subscribers start with this.
CLIENT_EVENT_PREFIX = "client-"

#: The webhook event types, grouped as Pusher's dashboard groups them (one
#: webhook URL per group).
WEBHOOK_GROUPS: dict[str, tuple[str, ...]] = {
    "channel_existence": ("channel_occupied", "channel_vacated"),
    "presence": ("member_added", "member_removed"),
    "client": ("client_event",),
    "cache_miss": ("cache_miss",),
    "subscription_count": ("subscription_count",),
}
#: The webhooks Pusher sends "delayed by a few seconds"
#: (https://pusher.com/docs/channels/server_api/webhooks/), each with the event
#: that cancels it while it waits: a channel that is occupied again, a member
#: that is back, sends neither. The one statement of the rule: the server's
#: webhook sender (one process) and the Redis backend's Lua (a cluster, where
#: the hold must be seen by every node) both read it.
DELAYED_WEBHOOKS: dict[str, str] = {
    "channel_vacated": "channel_occupied",
    "member_removed": "member_added",
}
#: The seven webhook event types.
WEBHOOK_EVENT_TYPES: frozenset[str] = frozenset(
    name for names in WEBHOOK_GROUPS.values() for name in names
)


def valid_socket_id(value: object) -> bool:
    """Whether ``value`` is a socket id string (:data:`SOCKET_ID_RE`)."""
    return isinstance(value, str) and SOCKET_ID_RE.fullmatch(value) is not None


def valid_name(value: object) -> bool:
    """Whether ``value`` is a channel name or user id string (:data:`NAME_RE`)."""
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def valid_channel_name(value: object) -> bool:
    """Whether ``value`` is a channel name, ``#server-to-user-<user id>`` included."""
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
        return False
    if value.startswith(SERVER_TO_USER_PREFIX):
        value = value[len(SERVER_TO_USER_PREFIX) :]
    return NAME_RE.fullmatch(value) is not None


def is_private(name: str) -> bool:
    """Whether ``name`` needs channel authorization (private, encrypted, presence)."""
    return name.startswith(AUTHORIZED_PREFIXES)


def is_presence(name: str) -> bool:
    """Whether ``name`` is a presence channel."""
    return name.startswith(PRESENCE_PREFIX)


def is_encrypted(name: str) -> bool:
    """Whether ``name`` is an end-to-end encrypted channel."""
    return name.startswith(ENCRYPTED_PREFIX)


def is_cache(name: str) -> bool:
    """Whether ``name`` is a cache channel."""
    return name.startswith(CACHE_PREFIXES)
