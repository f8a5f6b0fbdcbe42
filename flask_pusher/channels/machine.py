"""The connection's states and reconnect rules, without sockets or clocks.

pusher-js 8.6's ``ConnectionManager`` (``src/core/connection/connection_manager.ts``)
is the model: its states, its ``unavailableTimeout``, its activity and pong
timeouts, and what it does after each close code (``Protocol.getCloseAction``).
The I/O side (:mod:`flask_pusher.channels.connection`) tells the machine what
happened and waits as long as the machine says.

Where this client departs from pusher-js:

- after a failed attempt to open a socket it waits 1 s, then 2, 4... up to
  ``max_backoff`` (pusher-js retries through its transport strategies at once);
- once a connected socket closes, the state is ``connecting`` at once, not
  ``connected`` until the retry timer fires;
- ``unavailable`` is entered once ``unavailable_timeout`` has passed without a
  connection, and kept until the client connects (pusher-js goes back to
  ``connecting`` for each retry).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

from .errors import ConnectionRefused
from .protocol import close_action
from .protocol import Handshake

#: The connection states of pusher-js.
State = Literal["initialized", "connecting", "connected", "unavailable", "failed", "disconnected"]
STATES: tuple[State, ...] = (
    "initialized",
    "connecting",
    "connected",
    "unavailable",
    "failed",
    "disconnected",
)


@dataclasses.dataclass(frozen=True, slots=True)
class StateChange:
    """A ``state_change``: the state before and after (pusher-js's
    ``{previous, current}``)."""

    previous: State
    current: State


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    """The connection's timers, in seconds (pusher-js's option in brackets).

    :param activity: silence before the client sends ``pusher:ping``
        (``activityTimeout``, 120); the server's ``activity_timeout`` wins when shorter.
    :param pong: wait for any frame after a ping before reconnecting
        (``pongTimeout``, 30).
    :param unavailable: time without a connection before the state is
        ``unavailable`` (``unavailableTimeout``, 10).
    :param connect: time to open a socket and read the handshake (15, as
        pusher-js's WebSocket transport).
    :param first_backoff: wait after the first failed attempt to connect (1).
    :param max_backoff: the longest wait between attempts (30).
    """

    activity: float = 120.0
    pong: float = 30.0
    unavailable: float = 10.0
    connect: float = 15.0
    first_backoff: float = 1.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"Timeouts.{field.name} must be a positive number of seconds.")


class ConnectionMachine:
    """The state of one client's connection, and when to try again.

    :param timeouts: the timers; default :class:`Timeouts`.
    :param use_tls: connect with ``wss://``; a close with 4000 switches it on.
    :param on_change: called with each :class:`StateChange`.
    """

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        *,
        use_tls: bool = False,
        on_change: Callable[[StateChange], None] | None = None,
    ) -> None:
        self.timeouts = timeouts or Timeouts()
        self.use_tls = use_tls
        self._state: State = "initialized"
        self.socket_id: str | None = None
        #: The activity timeout in force on the current connection, in seconds.
        self.activity_timeout = self.timeouts.activity
        self._failures = 0
        self._on_change = on_change

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    def _set(self, state: State) -> None:
        previous, self._state = self._state, state
        if previous != state and self._on_change is not None:
            self._on_change(StateChange(previous, state))

    @property
    def running(self) -> bool:
        """Whether the client is connected or trying to be."""
        return self.state in ("connecting", "connected", "unavailable")

    def connect(self) -> None:
        """The user asked to connect, or the client tries again: ``connecting``
        (an ``unavailable`` client stays ``unavailable`` until it connects)."""
        if self.state != "unavailable":
            self._set("connecting")

    def unavailable(self) -> None:
        """``unavailable_timeout`` passed since the client began to connect."""
        if self.state == "connecting":
            self._set("unavailable")

    def connect_failed(self) -> float:
        """An attempt to open a socket or read the handshake failed: the seconds
        to wait before the next one (1, 2, 4... up to ``max_backoff``)."""
        delay = min(self.timeouts.first_backoff * 2.0**self._failures, self.timeouts.max_backoff)
        self._failures = min(self._failures + 1, 32)
        return delay

    def connected(self, handshake: Handshake) -> float:
        """The handshake arrived: ``connected``; return the activity timeout in
        force, ``min(activity option, server's activity_timeout)``."""
        self._failures = 0
        self.socket_id = handshake.socket_id
        self.activity_timeout = min(self.timeouts.activity, handshake.activity_timeout)
        self._set("connected")
        return self.activity_timeout

    def closed(self, code: int | None, reason: str = "") -> float | None:
        """The socket closed with ``code`` (``None``: no close frame): the seconds
        to wait before reconnecting, or ``None`` not to reconnect (then the state
        is ``disconnected``).

        pusher-js's rules: 4000 at once over TLS; 4001-4099 and 4300+ never
        (:class:`~flask_pusher.channels.ConnectionRefused`); 4100-4199 after 1 s;
        4200-4299 at once; 1002-1004 after 1 s; any other code after 1 s if the
        client was connected, else as a failed attempt (backoff).

        :raises ConnectionRefused: for the codes that refuse, after the state
            became ``disconnected``; the I/O side reports it to ``error`` callbacks.
        """
        was_connected = self.state == "connected"
        self.socket_id = None
        if not self.running:
            return None
        action = close_action(code)
        if action == "refused":
            self._set("disconnected")
            raise ConnectionRefused(code, reason or "Connection refused")
        if action == "tls_only":
            self.use_tls = True
            delay = 0.0
        elif action == "retry":
            delay = 0.0
        elif action == "backoff" or was_connected:
            delay = 1.0
        else:
            return self._retry(self.connect_failed())
        return self._retry(delay)

    def _retry(self, delay: float) -> float:
        self.connect()
        return delay

    def pong_timed_out(self) -> float:
        """No frame arrived within the pong timeout after a ping: reconnect at
        once (pusher-js ``retryIn(0)``)."""
        self.socket_id = None
        return self._retry(0.0)

    def disconnect(self) -> None:
        """The user disconnected: ``disconnected``, no reconnect."""
        self.socket_id = None
        self._set("disconnected")

    def fail(self) -> None:
        """A setup the client cannot connect with: ``failed`` (pusher-js enters it
        when no transport is supported)."""
        self.socket_id = None
        self._set("failed")
