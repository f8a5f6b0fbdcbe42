"""The realtime side of the chat: the extension, who may subscribe to what, who
the users are, and the webhook handlers that keep the activity log."""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections import deque
from typing import Any

from flask import session

from flask_pusher import Pusher

pusher = Pusher()

ROOM = "room"  # public: room messages, triggered by the server
PRESENCE = "presence-room"  # who is online, and "typing..." client events
ENCRYPTED = "private-encrypted-room"  # end-to-end encrypted messages
ACTIVITY = "activity"  # public: the activity log, as webhooks arrive
DM_RE = re.compile(r"private-dm-(\w+)-(\w+)", re.ASCII)

#: The last webhook events, newest last. In memory, so one process only: keep
#: such a log in a database when the app runs in several processes.
activity: deque[dict[str, Any]] = deque(maxlen=50)
_ids = itertools.count(1)


def dm_channel(a: str, b: str) -> str:
    """The private channel of the direct messages between ``a`` and ``b``."""
    return "private-dm-{}-{}".format(*sorted((a, b)))


def user_info(name: str) -> dict[str, Any]:
    """What the other users see of ``name``: a colour (a hue) of their own."""
    return {"name": name, "hue": int(hashlib.sha1(name.encode()).hexdigest(), 16) % 360}


@pusher.auth
def can_subscribe(channel_name: str, socket_id: str) -> bool:
    """Signed-in users may join the presence and encrypted rooms, and their own DMs."""
    name = session.get("name")
    if name is None:
        return False
    dm = DM_RE.fullmatch(channel_name)
    if dm:
        a, b = dm.groups()
        return name in (a, b) and a < b
    return channel_name in (PRESENCE, ENCRYPTED)


@pusher.channel_data
def presence_member(channel_name: str, socket_id: str) -> dict[str, Any]:
    """Members of the presence room are known by their name."""
    name = session["name"]
    return {"user_id": name, "user_info": user_info(name)}


@pusher.user_data
def signed_in_user(socket_id: str) -> dict[str, Any] | None:
    """``pusher.signin()`` on the page: the user that ``send_to_user`` reaches."""
    name = session.get("name")
    if name is None:
        return None
    return {"id": name, "user_info": user_info(name)}


@pusher.webhooks.on("channel_occupied")
@pusher.webhooks.on("channel_vacated")
@pusher.webhooks.on("member_added")
@pusher.webhooks.on("member_removed")
def record_activity(event: dict[str, Any]) -> None:
    """Add a webhook event to the activity log, and push it to the pages."""
    entry = {
        "id": next(_ids),
        "time": time.strftime("%H:%M:%S"),
        "name": event["name"],
        "channel": event["channel"],
        "user_id": event.get("user_id"),
    }
    activity.append(entry)
    pusher.trigger(ACTIVITY, "activity", entry)
