"""The asyncio Pusher Channels client (pusher-js 8.6's ``Pusher``, ``src/core/pusher.ts``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from importlib.metadata import version
from types import TracebackType
from typing import Any

import aiohttp

from .. import names
from .auth import AuthOptions
from .auth import Authorizer
from .auth import AuthRequest
from .channel import Channel
from .channel import channel_class
from .connection import Connection
from .errors import AuthError
from .errors import ConnectionRefused
from .errors import ProtocolError
from .events import Dispatcher
from .machine import StateChange
from .machine import Timeouts
from .protocol import decode
from .protocol import PROTOCOL
from .user import User

#: Frames larger than this are refused by the client, in bytes (Pusher's own
#: limit on an event is 10 KB).
MAX_MESSAGE_SIZE = 1 << 20
logger = logging.getLogger("flask_pusher.channels")


class ChannelsClient(Dispatcher):
    """A client of Pusher Channels, or of any Pusher-compatible server, on asyncio.

    ::

        async with ChannelsClient("KEY", cluster="eu") as client:
            channel = client.subscribe("orders")
            async for event in channel:
                print(event.name, event.data)

    Callbacks bound on the client (``bind``, ``bind_global``) get every event
    that is not ``pusher_internal:``, of every channel, as the server sent it
    (not decrypted), as pusher-js's global callbacks do; bind on a channel for
    its decrypted events and presence members.

    :param key: the app key.
    :param cluster: the cluster, such as ``"eu"``: connects to
        ``ws-CLUSTER.pusher.com``. Give it, or ``host``.
    :param host: the WebSocket host of a Pusher-compatible server (pusher-js's
        ``wsHost``), such as ``"127.0.0.1"``.
    :param port: the port; default 443 with TLS, 80 without (``wssPort``/``wsPort``).
    :param use_tls: ``wss://`` (pusher-js's ``forceTLS``). Default ``True``.
    :param path: a path before ``/app/KEY`` (``wsPath``). Default ``""``.
    :param channel_authorization: how private and presence channels are
        authorized: an :class:`~flask_pusher.channels.AuthOptions`, or its endpoint
        URL. Default ``None``: subscribing to them fails with an ``AuthError``.
    :param user_authentication: the same for :meth:`signin`.
    :param timeouts: the connection's timers (:class:`~flask_pusher.channels.Timeouts`).
    :param max_message_size: the largest frame accepted, in bytes. Default 1 MiB.
    :param session: an :class:`aiohttp.ClientSession` to use (not closed by the
        client); default: the client's own. Many clients can share one, whose
        connector must then allow as many connections
        (``aiohttp.TCPConnector(limit=0)``; aiohttp's default is 100).
    :raises ValueError: for an empty key, or neither ``cluster`` nor ``host``.
    """

    def __init__(
        self,
        key: str,
        *,
        cluster: str | None = None,
        host: str | None = None,
        port: int | None = None,
        use_tls: bool = True,
        path: str = "",
        channel_authorization: AuthOptions | str | None = None,
        user_authentication: AuthOptions | str | None = None,
        timeouts: Timeouts | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(key, str) or not key:
            raise ValueError("ChannelsClient needs the app key (a non-empty string).")
        if host is None and cluster is None:
            raise ValueError("Give ChannelsClient a cluster (such as 'eu') or a host.")
        self.key = key
        self.host = host if host is not None else f"ws-{cluster}.pusher.com"
        self.port = port
        self.path = path.rstrip("/")
        self._channel_auth = _authorizer(channel_authorization, self._session)
        self._user_auth = _authorizer(user_authentication, self._session)
        self._own_session = session is None
        self._http: aiohttp.ClientSession | None = session
        self.channels: dict[str, Channel] = {}
        self.connection = Connection(self, timeouts or Timeouts(), use_tls, max_message_size)
        self.user = User(self)
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, holding a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("A Pusher client task failed", exc_info=task.exception())

    def url(self, tls: bool | None = None) -> str:
        """The WebSocket URL, with pusher-js's query: ``protocol=7``, ``client``, ``version``."""
        tls = self.connection.machine.use_tls if tls is None else tls
        port = self.port if self.port is not None else (443 if tls else 80)
        scheme = "wss" if tls else "ws"
        query = f"protocol={PROTOCOL}&client=flask-pusher-python&version={_VERSION}&flash=false"
        return f"{scheme}://{self.host}:{port}{self.path}/app/{self.key}?{query}"

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def connect(self, timeout: float | None = 30.0) -> ChannelsClient:
        """Start connecting, and wait until connected.

        :param timeout: seconds to wait; ``None`` to return at once (the client
            keeps trying in the background).
        :raises ConnectionRefused: if the server refuses (a 4000-4099 close code,
            such as 4001 for an unknown key); the client is then disconnected.
        :raises TimeoutError: if not connected within ``timeout``; the client
            keeps trying until :meth:`disconnect`.
        """
        self.connection.start()
        if timeout is not None:
            try:
                await self.connection.wait_for_state("connected", timeout)
            except ConnectionRefused:
                await self.disconnect()  # nothing left open after a refusal
                raise
        return self

    async def disconnect(self) -> None:
        """Close the connection and stop reconnecting; end every ``async for``."""
        await self.connection.stop()
        for task in list(self._tasks):
            task.cancel()
        for channel in self.channels.values():
            channel._close_streams()
        self._close_streams()
        if self._own_session and self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> ChannelsClient:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    def subscribe(self, name: str) -> Channel:
        """The channel ``name``, subscribed now if connected and again after each
        reconnection; ``await channel.wait_subscribed()`` to know it succeeded.

        :raises ValueError: for a name Pusher does not allow (1 to 200 of
            ``A-Z a-z 0-9 _ - = @ , . ;``).
        """
        if not names.valid_channel_name(name):
            raise ValueError(f"Invalid channel name {name!r}: 1 to 200 of {names.NAME_CHARS}")
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = channel_class(name)(name, self)
        socket_id = self.connection.socket_id
        if socket_id is not None and not channel.subscribed and not channel.subscription_pending:
            channel.subscription_pending = True
            self._spawn(channel.subscribe(socket_id))
        return channel

    def unsubscribe(self, name: str) -> None:
        """Leave ``name``; its ``async for`` loops end."""
        channel = self.channels.pop(name, None)
        if channel is None:
            return
        channel.disconnect()
        channel._close_streams()
        if self.connection.state == "connected":
            self._spawn(self.connection.send_event("pusher:unsubscribe", {"channel": name}))

    def channel(self, name: str) -> Channel | None:
        """The channel ``name`` if subscribed, else ``None``."""
        return self.channels.get(name)

    def signin(self) -> None:
        """Authenticate the user (https://pusher.com/docs/channels/using_channels/user-authentication/),
        now and after each reconnection; ``await client.user.wait_signed_in()``."""
        self.user.signin()

    def _wants(self, channel: Channel) -> bool:
        return self.channels.get(channel.name) is channel or self.user._server_to_user is channel

    async def _authorize(self, socket_id: str, channel: str) -> dict[str, Any]:
        if self._channel_auth is None:
            raise AuthError(
                channel, "AuthError", "No channel_authorization given to the client", None
            )
        return await self._channel_auth(AuthRequest(socket_id, channel))

    async def _authenticate(self, socket_id: str) -> dict[str, Any]:
        if self._user_auth is None:
            raise AuthError("", "AuthError", "No user_authentication given to the client", None)
        return await self._user_auth(AuthRequest(socket_id))

    def _state_changed(self, change: StateChange) -> None:
        if change.current == "connected":
            socket_id = self.connection.socket_id
            assert socket_id is not None
            for channel in list(self.channels.values()):
                channel.subscription_pending = True
                self._spawn(channel.subscribe(socket_id))
            self.user._start()
        elif change.previous == "connected":
            for channel in self.channels.values():
                channel.disconnect()
            self.user._disconnected()

    def _handle(self, text: str) -> None:
        try:
            event = decode(text)
        except ProtocolError as exc:
            self.connection._error(exc)
            return
        self.connection._got(event)
        if event.channel is not None:
            channel = self.channels.get(event.channel)
            if channel is not None:
                channel.handle_event(event)
        self.user._handle(event)
        if not event.name.startswith("pusher_internal:"):
            self.emit(event)


def _authorizer(options: AuthOptions | str | None, session: Any) -> Authorizer | None:
    if options is None:
        return None
    if isinstance(options, str):
        options = AuthOptions(endpoint=options)
    return Authorizer(options, session)


try:
    _VERSION = version("Flask-Pusher")
except Exception:  # pragma: no cover - a source tree that is not installed
    _VERSION = "0"
