"""Channels as pusher-js 8.6 has them (``src/core/channels/*.ts``): public,
private, presence (with :class:`Members`) and private-encrypted; cache channels
are public, private or presence channels whose ``pusher:cache_miss`` reaches
listeners as an ordinary event (https://pusher.com/docs/channels/using_channels/cache-channels/)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any
from typing import TYPE_CHECKING

from .. import names
from .errors import AuthError
from .errors import BadEventName
from .errors import ProtocolError
from .errors import SubscriptionError
from .errors import UnsupportedFeature
from .events import Dispatcher
from .protocol import decode_data
from .protocol import Event

if TYPE_CHECKING:
    from .client import ChannelsClient

logger = logging.getLogger("flask_pusher.channels")


class Channel(Dispatcher):
    """A public channel (and the base of the others).

    :attr name: the channel name.
    :attr subscribed: whether ``pusher_internal:subscription_succeeded`` arrived
        on the current connection.
    :attr subscription_pending: whether a subscription is being made.
    :attr subscription_count: the last ``subscription_count`` the server sent
        (https://pusher.com/docs/channels/using_channels/events/#subscription-count),
        or ``None``.
    :attr error: the :class:`~flask_pusher.channels.SubscriptionError` of the last
        refused subscription, or ``None``.
    """

    def __init__(self, name: str, client: ChannelsClient) -> None:
        super().__init__()
        self.name = name
        self.client = client
        self.subscribed = False
        self.subscription_pending = False
        self.subscription_count: int | None = None
        self.error: SubscriptionError | None = None
        self._done: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} subscribed={self.subscribed}>"

    async def authorize(self, socket_id: str) -> dict[str, Any]:
        """The fields of ``pusher:subscribe`` besides ``channel``: ``auth`` is empty
        for a public channel."""
        return {"auth": ""}

    async def trigger(self, event: str, data: Any) -> bool:
        """Send a client event to the channel's other subscribers; ``False`` if the
        client is not connected. pusher-js's checks: the name must start with
        ``client-``; a warning is logged before the subscription succeeded. The
        server refuses client events on public channels, and more than 10 per
        second (``pusher:error`` 4301,
        https://pusher.com/docs/channels/using_channels/events/#triggering-client-events).

        :raises BadEventName: if ``event`` does not start with ``client-``.
        """
        if not event.startswith(names.CLIENT_EVENT_PREFIX):
            raise BadEventName(f"Event {event!r} does not start with 'client-'")
        if not self.subscribed:
            logger.warning("Client event %r triggered before subscription_succeeded", event)
        return await self.client.connection.send_event(event, data, self.name)

    async def wait_subscribed(self, timeout: float | None = None) -> Channel:
        """Wait until the subscription succeeded; returns the channel.

        :param timeout: seconds; ``None`` waits for ever.
        :raises SubscriptionError: if it is refused (:class:`AuthError` from the
            auth endpoint, with its ``status``).
        :raises TimeoutError: if neither happens in time.
        """
        if self.subscribed:
            return self
        if self.error is not None and not self.subscription_pending:
            raise self.error
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done.append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{self.name}: not subscribed within {timeout} s") from None
        finally:
            if future in self._done:
                self._done.remove(future)
        return self

    def _finish(self, error: SubscriptionError | None) -> None:
        self.subscription_pending = False
        self.error = error
        done, self._done = self._done, []
        for future in done:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def disconnect(self) -> None:
        """The connection went away: not subscribed (again after a reconnect)."""
        self.subscribed = False
        self.subscription_pending = False

    def handle_event(self, event: Event) -> None:
        """A frame on this channel (pusher-js ``Channel.handleEvent``)."""
        name = event.name
        if name == "pusher_internal:subscription_succeeded":
            self._succeeded(event)
        elif name == "pusher_internal:subscription_count":
            data = event.data if isinstance(event.data, dict) else {}
            count = data.get("subscription_count")
            if isinstance(count, int) and not isinstance(count, bool):
                self.subscription_count = count
            self.emit(dataclasses.replace(event, name="pusher:subscription_count"))
        elif name == "pusher:subscription_error":
            data = event.data if isinstance(event.data, dict) else {}
            status = data.get("status")
            self._finish(
                SubscriptionError(
                    self.name,
                    str(data.get("type") or "SubscriptionError"),
                    str(data.get("error") or "Subscription refused"),
                    status if isinstance(status, int) and not isinstance(status, bool) else None,
                )
            )
            self.emit(event)
        elif not name.startswith("pusher_internal:"):
            self.emit(self._user_event(event))

    def _user_event(self, event: Event) -> Event:
        return event

    def _succeeded(self, event: Event) -> None:
        self.subscribed = True
        self._finish(None)
        self.emit(dataclasses.replace(event, name="pusher:subscription_succeeded"))

    async def subscribe(self, socket_id: str) -> None:
        """Authorize and send ``pusher:subscribe``; a refusal is emitted as
        ``pusher:subscription_error`` with pusher-js's data."""
        if self.subscribed:
            return
        self.subscription_pending = True
        try:
            fields = await self.authorize(socket_id)
        except SubscriptionError as exc:
            self._finish(exc)
            self.emit(Event("pusher:subscription_error", self.name, exc.data))
            return
        if not self.client._wants(self) or self.client.connection.socket_id != socket_id:
            return  # unsubscribed or reconnected meanwhile: the next connection subscribes
        await self.client.connection.send_event(
            "pusher:subscribe", {**fields, "channel": self.name}
        )


class PrivateChannel(Channel):
    """A ``private-`` channel: authorized through the client's channel authorization."""

    async def authorize(self, socket_id: str) -> dict[str, Any]:
        data = await self.client._authorize(socket_id, self.name)
        if not isinstance(data.get("auth"), str):
            raise AuthError(self.name, "AuthError", "The auth response has no auth string", 200)
        fields: dict[str, Any] = {"auth": data["auth"]}
        if data.get("channel_data") is not None:
            fields["channel_data"] = data["channel_data"]
        return fields


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """A presence member: ``id`` (the ``user_id``) and ``info`` (its ``user_info``)."""

    id: str
    info: Any = None


class Members:
    """The members of a presence channel (pusher-js ``Members``), by user id.

    :attr me: this connection's own :class:`Member`, once subscribed.
    :attr count: the number of members.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every member (after a disconnection)."""
        self._members: dict[str, Any] = {}
        self.count = 0
        self.my_id: str | None = None
        self.me: Member | None = None

    def get(self, user_id: str) -> Member | None:
        """The member ``user_id``, or ``None``."""
        if user_id in self._members:
            return Member(user_id, self._members[user_id])
        return None

    def __iter__(self) -> Iterator[Member]:
        return (Member(i, info) for i, info in list(self._members.items()))

    def __len__(self) -> int:
        return self.count

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._members

    def __repr__(self) -> str:
        return f"<Members {sorted(self._members)} me={self.my_id!r}>"

    def _subscribed(self, data: Any) -> None:
        presence = data.get("presence") if isinstance(data, dict) else None
        members = presence.get("hash") if isinstance(presence, dict) else None
        self._members = {str(k): v for k, v in members.items()} if isinstance(members, dict) else {}
        count = presence.get("count") if isinstance(presence, dict) else None
        self.count = count if isinstance(count, int) else len(self._members)
        self.me = self.get(self.my_id) if self.my_id is not None else None

    def _add(self, data: Any) -> Member | None:
        if not isinstance(data, dict) or data.get("user_id") is None:
            return None
        user_id = str(data["user_id"])
        if user_id not in self._members:
            self.count += 1
        self._members[user_id] = data.get("user_info")
        return Member(user_id, data.get("user_info"))

    def _remove(self, data: Any) -> Member | None:
        if not isinstance(data, dict) or data.get("user_id") is None:
            return None
        user_id = str(data["user_id"])
        if user_id not in self._members:
            return None
        info = self._members.pop(user_id)
        self.count -= 1
        return Member(user_id, info)


class PresenceChannel(PrivateChannel):
    """A ``presence-`` channel: :attr:`members`, ``pusher:member_added`` and
    ``pusher:member_removed`` with a :class:`Member` as data
    (https://pusher.com/docs/channels/using_channels/presence-channels/)."""

    def __init__(self, name: str, client: ChannelsClient) -> None:
        super().__init__(name, client)
        self.members = Members()

    async def authorize(self, socket_id: str) -> dict[str, Any]:
        fields = await super().authorize(socket_id)
        channel_data = fields.get("channel_data")
        if channel_data is not None:
            try:
                self.members.my_id = str(json.loads(channel_data)["user_id"])
            except (ValueError, TypeError, KeyError):
                raise AuthError(self.name, "AuthError", "Invalid channel_data", 200) from None
            return fields
        user_id = await self.client.user.signed_in_id()
        if user_id is None:
            raise AuthError(
                self.name,
                "AuthError",
                "Invalid auth response: no channel_data, and not signed in",
                200,
            )
        self.members.my_id = user_id
        return fields

    def handle_event(self, event: Event) -> None:
        if event.name == "pusher_internal:member_added":
            member = self.members._add(event.data)
            if member is not None:
                self.emit(Event("pusher:member_added", self.name, member))
        elif event.name == "pusher_internal:member_removed":
            member = self.members._remove(event.data)
            if member is not None:
                self.emit(Event("pusher:member_removed", self.name, member))
        else:
            super().handle_event(event)

    def _succeeded(self, event: Event) -> None:
        self.members._subscribed(event.data)
        self.subscribed = True
        self._finish(None)
        self.emit(Event("pusher:subscription_succeeded", self.name, self.members))

    def disconnect(self) -> None:
        self.members.reset()
        super().disconnect()


class EncryptedChannel(PrivateChannel):
    """A ``private-encrypted-`` channel: events decrypted with PyNaCl's
    ``SecretBox`` and the auth response's ``shared_secret``
    (https://pusher.com/docs/channels/using_channels/encrypted-channels/).

    An event that does not decrypt makes the client ask the endpoint again, once,
    for a new key (as pusher-js); if it still does not decrypt, a
    :class:`~flask_pusher.channels.ProtocolError` reaches the connection's
    ``error`` callbacks and the event is dropped.
    """

    def __init__(self, name: str, client: ChannelsClient) -> None:
        super().__init__(name, client)
        self.key: bytes | None = None

    async def authorize(self, socket_id: str) -> dict[str, Any]:
        data = await self.client._authorize(socket_id, self.name)
        secret = data.get("shared_secret")
        try:
            key = base64.b64decode(secret, validate=True) if isinstance(secret, str) else b""
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise AuthError(
                self.name,
                "AuthError",
                f"No shared_secret key in auth payload for encrypted channel: {self.name}",
                200,
            )
        if not isinstance(data.get("auth"), str):
            raise AuthError(self.name, "AuthError", "The auth response has no auth string", 200)
        self.key = key
        return {"auth": data["auth"]}  # shared_secret stays here, as in pusher-js

    async def trigger(self, event: str, data: Any) -> bool:
        """Refused, as pusher-js refuses it.

        :raises UnsupportedFeature: always.
        """
        raise UnsupportedFeature("Client events are not currently supported for encrypted channels")

    def handle_event(self, event: Event) -> None:
        if event.name.startswith(("pusher:", "pusher_internal:")):
            super().handle_event(event)
            return
        data = event.data
        if not (
            isinstance(data, dict)
            and isinstance(data.get("ciphertext"), str)
            and isinstance(data.get("nonce"), str)
        ):
            self.client.connection._error(
                ProtocolError(f"{self.name}: an event without ciphertext and nonce", repr(data))
            )
            return
        plain = self._open(data)
        if plain is None:
            self.client._spawn(self._retry(event))
            return
        self.emit(dataclasses.replace(event, data=decode_data(plain)))

    def _open(self, data: dict[str, Any]) -> str | None:
        import nacl.exceptions
        import nacl.secret

        if self.key is None:
            return None
        try:
            box = nacl.secret.SecretBox(self.key)
            plain: bytes = box.decrypt(
                base64.b64decode(data["ciphertext"]), base64.b64decode(data["nonce"])
            )
            return plain.decode("utf-8")
        except (nacl.exceptions.CryptoError, binascii.Error, ValueError, TypeError):
            return None

    async def _retry(self, event: Event) -> None:
        socket_id = self.client.connection.socket_id
        if socket_id is not None:
            with contextlib.suppress(SubscriptionError):
                await self.authorize(socket_id)
        plain = self._open(event.data)
        if plain is None:
            self.client.connection._error(
                ProtocolError(f"{self.name}: an event did not decrypt; dropped", event.name)
            )
            return
        self.emit(dataclasses.replace(event, data=decode_data(plain)))


def channel_class(name: str) -> type[Channel]:
    """The class pusher-js picks for ``name`` (``src/core/channels/factory``)."""
    if name.startswith(names.ENCRYPTED_PREFIX):
        return EncryptedChannel
    if name.startswith(names.PRIVATE_PREFIX):
        return PrivateChannel
    if name.startswith(names.PRESENCE_PREFIX):
        return PresenceChannel
    return Channel
