"""The errors of the Pusher Channels client, each with Pusher's code or status.

Pusher's codes are those of its WebSocket protocol page
(https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/#error-codes);
the error types are those pusher-js 8.6 emits (``src/core/errors.ts``,
``src/core/connection/protocol/protocol.ts``).
"""

from __future__ import annotations

from typing import Any


class ChannelsError(Exception):
    """Base class of every error the client raises or passes to ``error`` callbacks."""


class PusherError(ChannelsError):
    """A ``pusher:error`` frame, or a close of the connection with a Pusher code.

    :param code: Pusher's code (4000-4399), or ``None`` for a non-fatal error.
    :param message: the server's message.
    """

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(f"{message} (code {code})" if code is not None else message)
        self.code = code
        self.message = message


class ConnectionRefused(PusherError):
    """The server closed with 4000-4099 or 4300+ (pusher-js's ``refused``): the
    client stops reconnecting and its state is ``disconnected``.

    Common codes: 4001 (no app with this key), 4003 (app disabled), 4004 (over
    connection quota), 4009 (connection unauthorized or terminated).
    """


class ProtocolError(ChannelsError):
    """A frame the client cannot read: not JSON, not an object, no ``event``, or an
    invalid handshake (pusher-js's ``MessageParseError`` and "Invalid handshake").

    :param data: the frame's text (at most its first 200 characters).
    """

    def __init__(self, message: str, data: str = "") -> None:
        super().__init__(message)
        self.data = data[:200]


class SubscriptionError(ChannelsError):
    """A subscription was refused: by the auth endpoint (see :class:`AuthError`) or
    by the server's ``pusher:subscription_error`` (soketi's form, which the local
    server sends too).

    :param channel: the channel name.
    :param type: ``"AuthError"`` or the server's type (``"LimitReached"``...).
    :param message: what went wrong.
    :param status: the HTTP status of the refusal (403, 401...), or ``None``.
    """

    def __init__(self, channel: str, type: str, message: str, status: int | None) -> None:
        super().__init__(f"{channel}: {message}" + (f" ({status})" if status is not None else ""))
        self.channel = channel
        self.type = type
        self.message = message
        self.status = status

    @property
    def data(self) -> dict[str, Any]:
        """The ``pusher:subscription_error`` data pusher-js emits:
        ``{"type", "error", "status"?}``."""
        data: dict[str, Any] = {"type": self.type, "error": self.message}
        if self.status is not None:
            data["status"] = self.status
        return data


class AuthError(SubscriptionError):
    """Channel authorization or user authentication failed: the endpoint answered
    another status than 200 (``status``), or a body that is not the JSON it must be
    (``status`` 200), or the callable raised (``status`` ``None``). pusher-js's
    ``HTTPAuthError``. For signin, ``channel`` is ``""``."""


class BadEventName(ChannelsError, ValueError):
    """A client event whose name does not start with ``client-`` (pusher-js's
    ``BadEventName``)."""


class UnsupportedFeature(ChannelsError):
    """Client events on an encrypted channel (pusher-js's ``UnsupportedFeature``)."""


class QueueOverflow(ChannelsError):
    """An ``async for`` over a channel fell behind by more than its queue's size
    (``max_queue``); the events that did not fit were dropped, and the iteration
    raises this instead of hiding the gap.

    :param dropped: how many events were dropped.
    """

    def __init__(self, dropped: int) -> None:
        super().__init__(f"{dropped} events dropped: the reader fell behind its queue")
        self.dropped = dropped


class TransportError(ChannelsError):
    """The socket could not be opened or the handshake did not arrive in time
    (unreachable host, refused TCP connection, TLS or HTTP failure). The client
    keeps trying with backoff; this reaches ``error`` callbacks.

    :param url: the URL it tried.
    """

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url
