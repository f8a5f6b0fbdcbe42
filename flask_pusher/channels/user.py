"""User authentication (``signin``), ``#server-to-user-`` events and watchlist
events, as pusher-js 8.6 has them (``src/core/user.ts``, ``src/core/watchlist.ts``;
https://pusher.com/docs/channels/using_channels/user-authentication/,
https://pusher.com/docs/channels/using_channels/watchlist-events/)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from typing import TYPE_CHECKING

from .. import names
from .channel import Channel
from .errors import AuthError
from .events import Dispatcher
from .protocol import Event

if TYPE_CHECKING:
    from .client import ChannelsClient


class User(Dispatcher):
    """The signed-in user of a client (pusher-js's ``pusher.user``).

    Its callbacks get the events sent to the user with ``send_to_user`` (from
    ``#server-to-user-<id>``), and ``pusher:signin_error`` (data: ``{"type",
    "error", "status"?}``). :attr:`watchlist` gets ``online`` and ``offline``
    events whose data is ``{"name", "user_ids"}``.

    :attr user_data: the ``user_data`` of ``pusher:signin_success``, decoded, or ``None``.
    """

    def __init__(self, client: ChannelsClient) -> None:
        super().__init__()
        self._client = client
        self.user_data: dict[str, Any] | None = None
        self.watchlist = Dispatcher()
        self.signin_requested = False
        self.error: AuthError | None = None
        self._server_to_user: Channel | None = None
        self._done: asyncio.Event | None = None

    def signin(self) -> None:
        """Authenticate the user now if connected, and after every reconnection."""
        if self.signin_requested:
            return
        self.signin_requested = True
        self._start()

    def _done_event(self) -> asyncio.Event:
        if self._done is None:
            self._done = asyncio.Event()
        return self._done

    def _start(self) -> None:
        if not self.signin_requested:
            return
        self._done_event().clear()
        socket_id = self._client.connection.socket_id
        if socket_id is not None:
            self._client._spawn(self._signin(socket_id))

    async def _signin(self, socket_id: str) -> None:
        try:
            data = await self._client._authenticate(socket_id)
            if not isinstance(data.get("auth"), str) or not isinstance(data.get("user_data"), str):
                raise AuthError(
                    "",
                    "AuthError",
                    "The user authentication response needs auth and user_data strings",
                    200,
                )
        except AuthError as exc:
            self.error = exc
            self.emit(Event("pusher:signin_error", None, exc.data))
            self._cleanup()
            return
        await self._client.connection.send_event(
            "pusher:signin", {"auth": data["auth"], "user_data": data["user_data"]}
        )

    async def signed_in_id(self, timeout: float | None = None) -> str | None:
        """The user id once a requested signin is done, ``None`` if it failed or
        none was requested (pusher-js's ``signinDonePromise``)."""
        if not self.signin_requested:
            return None
        await asyncio.wait_for(self._done_event().wait(), timeout)
        return None if self.user_data is None else str(self.user_data["id"])

    async def wait_signed_in(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for ``pusher:signin_success``; returns :attr:`user_data`.

        :raises AuthError: if the signin failed.
        :raises TimeoutError: if it is not done in time.
        """
        if not self.signin_requested:
            self.signin()
        try:
            await asyncio.wait_for(self._done_event().wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"Not signed in within {timeout} s") from None
        if self.user_data is None:
            raise self.error or AuthError("", "AuthError", "Signin failed", None)
        return self.user_data

    def _handle(self, event: Event) -> None:
        if event.name == "pusher:signin_success":
            self._succeeded(event.data)
        elif event.name == "pusher_internal:watchlist_events":
            events = event.data.get("events") if isinstance(event.data, dict) else None
            for entry in events if isinstance(events, list) else ():
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    self.watchlist.emit(Event(entry["name"], None, entry))
        elif self._server_to_user is not None and event.channel == self._server_to_user.name:
            self._server_to_user.handle_event(event)

    def _succeeded(self, data: Any) -> None:
        raw = data.get("user_data") if isinstance(data, dict) else None
        try:
            user = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            user = None
        if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
            self.error = AuthError("", "AuthError", "user_data has no id", 200)
            self._cleanup()
            return
        self.user_data = user
        self.error = None
        self._done_event().set()
        channel = Channel(names.SERVER_TO_USER_PREFIX + user["id"], self._client)
        channel.bind_global(self._relay)
        self._server_to_user = channel
        socket_id = self._client.connection.socket_id
        if socket_id is not None:
            self._client._spawn(channel.subscribe(socket_id))

    def _relay(self, event: Event) -> None:
        if not event.name.startswith(("pusher:", "pusher_internal:")):
            self.emit(event)

    def _cleanup(self) -> None:
        self.user_data = None
        if self._server_to_user is not None:
            self._server_to_user.unbind_all()
            self._server_to_user.disconnect()
            self._server_to_user = None
        if self.signin_requested:
            self._done_event().set()

    def _disconnected(self) -> None:
        self._cleanup()
        if self.signin_requested:
            self._done_event().clear()
