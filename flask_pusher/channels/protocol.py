"""Frames of the Pusher Channels WebSocket protocol, version 7, as pusher-js 8.6
reads and writes them (``src/core/connection/protocol/protocol.ts``); no I/O.

The protocol: https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from typing import Literal

from .errors import ProtocolError

#: The protocol version this client speaks.
PROTOCOL = 7
#: pusher-js's actions for a close code (``Protocol.getCloseAction``).
CloseAction = Literal["tls_only", "refused", "backoff", "retry"]


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event received from the server.

    :param name: the event name (``"message"``, ``"pusher:subscription_succeeded"``...).
    :param channel: the channel it came on, or ``None`` for connection events.
    :param data: the event's data: as pusher-js does, a string that holds JSON is
        decoded (so an object arrives as a :class:`dict`), any other string is kept;
        decrypted for an encrypted channel; the
        :class:`~flask_pusher.channels.Members` for a presence channel's
        ``pusher:subscription_succeeded``.
    :param user_id: the sender of a client event on a presence channel, else ``None``.
    """

    name: str
    channel: str | None = None
    data: Any = None
    user_id: str | None = None


def decode_data(data: Any) -> Any:
    """A frame's ``data`` as pusher-js decodes it: JSON text is parsed, other
    strings are kept as they are."""
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


def decode(text: str | bytes) -> Event:
    """One frame from the server as an :class:`Event`.

    :raises ProtocolError: if the frame is not a JSON object with a string
        ``event`` (pusher-js's ``MessageParseError``).
    """
    try:
        frame = json.loads(text)
    except ValueError:
        shown = text if isinstance(text, str) else text.decode("utf-8", "replace")
        raise ProtocolError("A frame from the server is not JSON", shown) from None
    if not isinstance(frame, dict) or not isinstance(frame.get("event"), str):
        raise ProtocolError("A frame from the server has no event name", str(text))
    channel = frame.get("channel")
    user_id = frame.get("user_id")
    return Event(
        frame["event"],
        channel if isinstance(channel, str) else None,
        decode_data(frame.get("data")),
        str(user_id) if user_id not in (None, "") else None,
    )


def encode(name: str, data: Any, channel: str | None = None) -> str:
    """A frame to the server, as pusher-js encodes it: ``data`` as it is (an
    object for ``pusher:`` events)."""
    frame: dict[str, Any] = {"event": name, "data": data}
    if channel is not None:
        frame["channel"] = channel
    return json.dumps(frame, separators=(",", ":"))


@dataclasses.dataclass(frozen=True, slots=True)
class Handshake:
    """A ``pusher:connection_established``: the ``socket_id`` and the server's
    ``activity_timeout`` in seconds."""

    socket_id: str
    activity_timeout: float


def handshake(event: Event) -> Handshake:
    """Read the first frame of a connection (pusher-js ``Protocol.processHandshake``).

    :raises PusherError: for a ``pusher:error`` (its subclass
        :class:`~flask_pusher.channels.ConnectionRefused` when its code refuses).
    :raises ProtocolError: for any other frame, a missing ``socket_id``, or a
        missing or zero ``activity_timeout``.
    """
    from .errors import ConnectionRefused
    from .errors import PusherError

    if event.name == "pusher:error":
        data = event.data if isinstance(event.data, dict) else {}
        code = data.get("code") if isinstance(data.get("code"), int) else None
        message = str(data.get("message") or "pusher:error during the handshake")
        if code is not None and close_action(code) == "refused":
            raise ConnectionRefused(code, message)
        raise PusherError(code, message)
    if event.name != "pusher:connection_established" or not isinstance(event.data, dict):
        raise ProtocolError("Invalid handshake", repr(event))
    socket_id = event.data.get("socket_id")
    timeout = event.data.get("activity_timeout")
    if not isinstance(socket_id, str) or not socket_id:
        raise ProtocolError("No socket_id in the handshake", repr(event))
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ProtocolError("No activity timeout specified in handshake", repr(event))
    return Handshake(socket_id, float(timeout))


def close_action(code: int | None) -> CloseAction | None:
    """What pusher-js does after a close with ``code`` (``Protocol.getCloseAction``).

    - 1002-1004: ``"backoff"`` (retry after 1 s); other codes below 4000: ``None``
      (a connection that was up retries after 1 s);
    - 4000: ``"tls_only"`` (retry at once over TLS);
    - 4001-4099: ``"refused"`` (no retry);
    - 4100-4199: ``"backoff"``;
    - 4200-4299: ``"retry"`` (at once);
    - 4300 and above: ``"refused"``.
    """
    if code is None or code < 4000:
        return "backoff" if code is not None and 1002 <= code <= 1004 else None
    if code == 4000:
        return "tls_only"
    if code < 4100:
        return "refused"
    if code < 4200:
        return "backoff"
    if code < 4300:
        return "retry"
    return "refused"
