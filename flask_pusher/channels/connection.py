"""The I/O side of the connection: aiohttp's WebSocket client, the activity and
pong timers, and the waits the :class:`~flask_pusher.channels.machine.ConnectionMachine`
asks for. pusher-js 8.6's ``src/core/connection/connection_manager.ts`` and
``connection.ts`` are the model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from typing import TYPE_CHECKING

import aiohttp

from .errors import ChannelsError
from .errors import ConnectionRefused
from .errors import ProtocolError
from .errors import PusherError
from .errors import TransportError
from .machine import ConnectionMachine
from .machine import State
from .machine import StateChange
from .machine import Timeouts
from .protocol import close_action
from .protocol import decode
from .protocol import encode
from .protocol import Event
from .protocol import handshake

if TYPE_CHECKING:
    from .client import ChannelsClient

logger = logging.getLogger("flask_pusher.channels")
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
ConnectionCallback = Callable[[Any], Any]


class Connection:
    """A client's connection (pusher-js's ``pusher.connection``).

    :attr state: ``"initialized"``, ``"connecting"``, ``"connected"``,
        ``"unavailable"``, ``"failed"`` or ``"disconnected"``.
    :attr socket_id: the connection's ``socket_id`` while connected, else ``None``.

    Callbacks (:meth:`bind`): ``"state_change"`` gets a
    :class:`~flask_pusher.channels.StateChange`; each state's name gets the same;
    ``"error"`` gets a :class:`~flask_pusher.channels.ChannelsError`;
    ``"connecting_in"`` gets the seconds before the next attempt; ``"message"``
    gets each :class:`~flask_pusher.channels.Event`.
    """

    def __init__(
        self, client: ChannelsClient, timeouts: Timeouts, use_tls: bool, max_message_size: int
    ) -> None:
        self._client = client
        self.machine = ConnectionMachine(timeouts, use_tls=use_tls, on_change=self._changed)
        self._callbacks: dict[str, list[ConnectionCallback]] = {}
        self._ws: aiohttp.ClientWebSocketResponse[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._unavailable: asyncio.TimerHandle | None = None
        self._state_waiters: list[tuple[State, asyncio.Future[None]]] = []
        self._received = 0
        self._last = 0.0
        self._max_message_size = max_message_size
        self.last_error: ChannelsError | None = None

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def socket_id(self) -> str | None:
        return self.machine.socket_id if self.machine.state == "connected" else None

    def bind(self, name: str, callback: ConnectionCallback) -> ConnectionCallback:
        """Call ``callback(value)`` for ``name`` (see the class); returns ``callback``."""
        self._callbacks.setdefault(name, []).append(callback)
        return callback

    def unbind(self, name: str, callback: ConnectionCallback | None = None) -> None:
        """Remove ``callback`` from ``name``, or all of its callbacks."""
        if callback is None:
            self._callbacks.pop(name, None)
        else:
            self._callbacks[name] = [c for c in self._callbacks.get(name, ()) if c is not callback]

    def _emit(self, name: str, value: Any) -> None:
        for callback in list(self._callbacks.get(name, ())):
            try:
                callback(value)
            except Exception:
                logger.exception("A connection callback for %r raised", name)

    def _error(self, error: ChannelsError) -> None:
        self.last_error = error
        logger.debug("Pusher connection error: %s", error)
        self._emit("error", error)

    def _changed(self, change: StateChange) -> None:
        self._emit("state_change", change)
        self._emit(change.current, change)
        self._client._state_changed(change)
        for waiter in list(self._state_waiters):
            state, future = waiter
            if not future.done() and (
                state == change.current or change.current in ("disconnected", "failed")
            ):
                if state == change.current:
                    future.set_result(None)
                else:
                    future.set_exception(
                        self.last_error or ChannelsError(f"The connection is {change.current}")
                    )

    async def wait_for_state(self, state: State, timeout: float | None = None) -> None:
        """Wait until the state is ``state``.

        :raises ConnectionRefused: (or the last error) if the connection ends
            ``disconnected`` or ``failed`` while waiting for another state.
        :raises TimeoutError: if it does not happen in time.
        """
        if self.state == state:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (state, future)
        self._state_waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"The connection is {self.state}, not {state}, after {timeout} s"
            ) from None
        finally:
            self._state_waiters.remove(entry)

    def start(self) -> None:
        """Connect, and keep reconnecting until :meth:`stop` or a refusal."""
        if self._task is not None and not self._task.done():
            return
        self.last_error = None
        self.machine.connect()
        self._arm_unavailable()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Close the socket and stop reconnecting: ``disconnected``."""
        task, self._task = self._task, None
        self.machine.disconnect()
        self._disarm_unavailable()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    def _arm_unavailable(self) -> None:
        if self._unavailable is None:
            delay = self.machine.timeouts.unavailable
            self._unavailable = asyncio.get_running_loop().call_later(delay, self._went_unavailable)

    def _went_unavailable(self) -> None:
        self._unavailable = None
        self.machine.unavailable()

    def _disarm_unavailable(self) -> None:
        if self._unavailable is not None:
            self._unavailable.cancel()
            self._unavailable = None

    def url(self) -> str:
        return self._client.url(tls=self.machine.use_tls)

    async def send_event(self, name: str, data: Any, channel: str | None = None) -> bool:
        """Send a frame; ``False`` if not connected (pusher-js ``send_event``)."""
        ws = self._ws
        if ws is None or ws.closed or self.state != "connected":
            return False
        try:
            await ws.send_str(encode(name, data, channel))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        return True

    async def _run(self) -> None:
        try:
            while self.machine.running:
                delay = await self._attempt()
                if delay is None:
                    break
                if delay > 0:
                    self._emit("connecting_in", delay)
                    await asyncio.sleep(delay)
                self._arm_unavailable()
        finally:
            self._disarm_unavailable()

    def _closed(self, code: int | None, reason: str) -> float | None:
        if code is not None and code not in (1000, 1001):
            # Reported before the state changes, as pusher-js does.
            if close_action(code) == "refused":
                self._error(ConnectionRefused(code, reason or "Connection refused"))
            else:
                self._error(PusherError(code, reason or "Connection closed"))
        try:
            return self.machine.closed(code, reason)
        except ConnectionRefused:
            return None

    async def _attempt(self) -> float | None:
        self.machine.connect()
        url = self.url()
        session = self._client._session()
        timeout = self.machine.timeouts.connect
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(url, autoping=True, max_msg_size=self._max_message_size), timeout
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            self._error(TransportError(f"Cannot connect to {url}: {exc!r}", url))
            return self.machine.connect_failed()
        self._ws = ws
        try:
            return await self._connected(ws, url)
        finally:
            self._ws = None
            if not ws.closed:
                await ws.close()

    async def _connected(self, ws: aiohttp.ClientWebSocketResponse[Any], url: str) -> float | None:
        try:
            msg = await asyncio.wait_for(ws.receive(), self.machine.timeouts.connect)
        except asyncio.TimeoutError:
            self._error(TransportError(f"No handshake from {url}", url))
            return self.machine.connect_failed()
        if msg.type in _CLOSED or msg.type == aiohttp.WSMsgType.ERROR:
            return self._closed(ws.close_code, str(msg.extra or ""))
        try:
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ProtocolError("Invalid handshake: not a text frame")
            shake = handshake(decode(msg.data))
        except ConnectionRefused as exc:
            await ws.close()
            return self._closed(exc.code, exc.message)
        except PusherError as exc:
            await ws.close()
            return self._closed(exc.code, exc.message)
        except ProtocolError as exc:
            self._error(exc)
            return self.machine.connect_failed()
        self._disarm_unavailable()
        activity = self.machine.connected(shake)
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._pong_missed = False
        watchdog = loop.create_task(self._watchdog(ws, activity))
        handle = self._client._handle
        try:
            while True:
                msg = await ws.receive()
                self._received += 1
                self._last = loop.time()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    handle(msg.data)
                elif msg.type in _CLOSED or msg.type == aiohttp.WSMsgType.ERROR:
                    break
                else:
                    self._error(ProtocolError("A binary frame from the server was ignored"))
        finally:
            watchdog.cancel()
        if self._pong_missed:
            return self.machine.pong_timed_out()
        return self._closed(
            ws.close_code, str(msg.extra or "") if msg.type == aiohttp.WSMsgType.CLOSE else ""
        )

    async def _watchdog(self, ws: aiohttp.ClientWebSocketResponse[Any], activity: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self._last + activity - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            before = self._received
            await self.send_event("pusher:ping", {})
            await asyncio.sleep(self.machine.timeouts.pong)
            if self._received == before:
                self._pong_missed = True
                await ws.close()
                return

    def _got(self, event: Event) -> None:
        if event.name == "pusher:ping":
            self._client._spawn(self.send_event("pusher:pong", {}))
        elif event.name == "pusher:error":
            data = event.data if isinstance(event.data, dict) else {}
            code = data.get("code")
            self._error(
                PusherError(code if isinstance(code, int) else None, str(data.get("message") or ""))
            )
        if "message" in self._callbacks:
            self._emit("message", event)
