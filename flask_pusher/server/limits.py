"""Per-app limits, as Pusher, soketi and Reverb have them, counted through the backend.

Each limit is an :class:`~flask_pusher.server.config.AppConfig` field (also a
key of an app in ``--config FILE``), off or generous by default:

- ``max_connections``: close 4004, counted across nodes (the backend);
- ``max_connections_per_address``: close 4004, per client address (the
  peer's, or the trusted proxy's ``X-Forwarded-For`` client), counted across
  nodes (the backend);
- ``allowed_origins``: close 4009, at the handshake;
- ``max_subscriptions_per_connection``: ``pusher:subscription_error`` 403
  and ``pusher:error`` 4303;
- ``max_subscription_changes_per_second``: a connection's budget of
  subscribes and unsubscribes (:func:`spend`), 429 and ``pusher:error`` 4304;
- ``max_backend_events_per_second``, ``max_read_requests_per_second``: HTTP
  429, counted across nodes (the backend);
- ``authorized_connections``: close 4009 after ``user_authentication_timeout``
  (the core's tick).

The codes are Pusher's (4004 "Application is over connection quota", 4009
"Connection is unauthorized",
https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/#error-codes),
Reverb's for the origin (4009 "Origin not allowed",
https://github.com/laravel/reverb, ``src/Protocols/Pusher/Server.php``) and
soketi's for the HTTP API (429, https://docs.soketi.app/app-management/introduction).
What spans nodes is asked of the backend (:meth:`Backend.admit
<flask_pusher.server.backend.Backend.admit>`, :meth:`Backend.take
<flask_pusher.server.backend.Backend.take>`): one process decides from its own
state, a cluster through Redis, and a node that lost Redis decides alone.
Every refusal is counted in :attr:`AppState.refused
<flask_pusher.server.state.AppState.refused>` by limit (the
``limit_refusals_total`` metric).
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import names
from . import protocol
from .backend import LocalBackend
from .errors import APIError

if TYPE_CHECKING:
    from .access import Request
    from .access import TrustedProxies
    from .backend import Backend
    from .state import AppState
    from .state import Connection

#: ``pusher:error`` code of a subscription over ``max_subscriptions_per_connection``
#: (in Pusher's 4300-4399 "other errors" range; Pusher documents no code of its own).
SUBSCRIPTION_LIMIT_CODE = 4303
#: The backend's name of each HTTP API rate bucket.
EVENTS = "events"
READS = "reads"
#: The HTTP API operations that count as reads.
READ_OPERATIONS = frozenset({"channels", "channel", "users"})


def refused(app: AppState, limit: str) -> None:
    """Count one refusal by ``limit`` (the name of the config field)."""
    app.refused[limit] = app.refused.get(limit, 0) + 1


def origin_allowed(patterns: tuple[str, ...], origin: str | None) -> bool:
    """Whether an ``Origin`` header's host matches one of ``patterns``
    (shell-style, ``*`` alone allows any origin, none too)."""
    if "*" in patterns:
        return True
    if not origin:
        return False
    try:
        host = urlsplit(origin.strip()).hostname
    except ValueError:
        return False
    if not host:
        return False
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


def address(app: AppState | None, request: Request, proxies: TrustedProxies) -> str | None:
    """The client address ``app`` counts a handshake under, or ``None`` (no
    ``max_connections_per_address``): the TCP peer's, or the last
    ``X-Forwarded-For`` entry when the peer is a trusted proxy
    (:meth:`TrustedProxies.client <flask_pusher.server.access.TrustedProxies.client>`)."""
    if app is None or app.config.max_connections_per_address is None:
        return None
    return proxies.client(request)


async def admit(
    backend: Backend, app: AppState | None, request: Request, client: str | None = None
) -> tuple[int, str] | None:
    """A WebSocket handshake's refusal by the app's limits, or ``None``: admitted
    (or nothing to admit: no ``app``, or the client already left).

    The origin first (``allowed_origins``, 4009), then the connection quota
    (``max_connections``, 4004) and the client address's
    (``max_connections_per_address``, 4004) taken from the backend: an
    admitted connection holds its slots until :meth:`Backend.disconnected
    <flask_pusher.server.backend.Backend.disconnected>`.

    :param request: the handshake request (its ``Origin`` header).
    :param client: the client's address (:func:`address`), counted against
        ``max_connections_per_address`` (4004); ``None``: not counted.
    :returns: ``(close code, reason)`` or ``None``.
    """
    if app is None or request.transport is None:
        return None
    full = _origin(app, request)
    if full is None and (app.config.max_connections is not None or client is not None):
        full = await backend.admit(app, client)
    if full is None:
        return None
    refused(app, full)
    return REFUSALS[full]


def admits_at_once(backend: Backend, app: AppState, client: str | None) -> bool:
    """Whether :func:`admit_now` can decide a handshake to ``app`` from
    ``client``: no connection quota to take, or one this process counts
    (not one counted in Redis)."""
    return isinstance(backend, LocalBackend) or (
        app.config.max_connections is None and client is None
    )


def admit_now(backend: Backend, app: AppState, request: Request, client: str | None) -> str | None:
    """What :func:`admit` decides, without waiting (where :func:`admits_at_once`
    says it can): ``None``, admitted, or the name of the limit that refuses,
    neither counted nor logged (:func:`admit` does that when it answers)."""
    full = _origin(app, request)
    if full is None and (app.config.max_connections is not None or client is not None):
        assert isinstance(backend, LocalBackend), "admits_at_once() first"
        full = backend.admit_now(app, client)
    return full


def _origin(app: AppState, request: Request) -> str | None:
    patterns = app.config.allowed_origins
    if patterns is not None and not origin_allowed(tuple(patterns), request.headers.get("Origin")):
        return "allowed_origins"
    return None


#: The close code and reason of each limit a handshake can meet.
REFUSALS = {
    "allowed_origins": (4009, "Origin not allowed"),
    "max_connections": (4004, "Application is over connection quota"),
    "max_connections_per_address": (4004, "Too many connections from this address"),
}


async def check_api(backend: Backend, operation: str, app: AppState, body: bytes) -> None:
    """Count a signed HTTP API request against the app's rates.

    :param operation: ``trigger``, ``trigger_batch``, ``channels``, ``channel``,
        ``users`` or ``terminate`` (not counted).
    :param body: the request body (a batch counts each of its events).
    :raises APIError: 429 over ``max_backend_events_per_second`` or
        ``max_read_requests_per_second``.
    """
    config = app.config
    if operation in READ_OPERATIONS:
        limit = config.max_read_requests_per_second
        if limit is not None and not await backend.take(app, READS, 1, limit):
            refused(app, "max_read_requests_per_second")
            raise APIError(429, f"Too many read requests: at most {limit} per second")
    elif operation in ("trigger", "trigger_batch"):
        limit = config.max_backend_events_per_second
        if limit is None:
            return
        amount = _batch_size(body) if operation == "trigger_batch" else 1
        if not await backend.take(app, EVENTS, amount, limit):
            refused(app, "max_backend_events_per_second")
            raise APIError(429, f"Too many events: at most {limit} per second")


def _batch_size(body: bytes) -> int:
    try:
        batch = protocol.loads(body).get("batch")
    except (ValueError, AttributeError, TypeError):
        return 1  # the core answers 400
    return max(1, len(batch)) if isinstance(batch, list) else 1


def authorized(conn: Connection) -> bool:
    """Whether ``conn`` is authorized: signed in, or subscribed to a private
    or presence channel (Pusher's authorized connections)."""
    return conn.user_id is not None or any(names.is_private(n) for n in conn.channels)


#: ``pusher:error`` code of a subscription over ``max_subscription_changes_per_second``.
SUBSCRIPTION_RATE_CODE = 4304


def spend(conn: Connection, cost: int, now: float, refusable: bool = True) -> bool:
    """Take ``cost`` from ``conn``'s budget of subscription changes, a token
    bucket refilled at ``max_subscription_changes_per_second`` up to
    ``max_subscriptions_per_connection``.

    The bucket is kept as one number, ``conn.full_at``: the time (the core's
    clock, in seconds) at which it will be full again, ``None`` while it is
    (the generic cell rate algorithm's "theoretical arrival time",
    https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm).

    :param refusable: ``False`` for an unsubscribe, which is never refused
        (the client would keep receiving what it left) but is paid for: the
        budget may go below zero, down to minus its size.
    :returns: whether the change may be made (it is then paid for).
    """
    config = conn.app.config
    rate = config.max_subscription_changes_per_second
    size = max(rate, config.max_subscriptions_per_connection)
    full_at = conn.full_at
    budget = size if full_at is None or full_at <= now else size - (full_at - now) * rate
    if refusable and budget < cost:
        return False
    conn.full_at = now + (size - max(-size, budget - cost)) / rate
    return True


#: What a presence join or leave costs beyond its members: at the default
#: pace a connection flaps a presence channel at most 10 times a second.
PRESENCE_COST = 10


def change_cost(conn: Connection, name: str) -> int:
    """What subscribing to or leaving ``name`` costs ``conn``: one for a
    channel, :data:`PRESENCE_COST` plus one per member told for a presence
    channel (the flapper pays for its members' frames)."""
    if not names.is_presence(name):
        return 1
    channel = conn.app.channels.get(name)
    return PRESENCE_COST + (0 if channel is None else len(channel.members))


def subscription_allowed(conn: Connection) -> bool:
    """Whether ``conn`` may subscribe to one more channel."""
    return len(conn.channels) < conn.app.config.max_subscriptions_per_connection
