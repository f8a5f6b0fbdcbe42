"""Configuration of the apps a :class:`~flask_pusher.server.LocalServer` serves."""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from .. import names
from ..server_options import DEFAULT_METRICS_PREFIX as DEFAULT_METRICS_PREFIX
from ..server_options import DEFAULT_NODE_TIMEOUT as DEFAULT_NODE_TIMEOUT
from ..server_options import DEFAULT_REDIS_PREFIX as DEFAULT_REDIS_PREFIX
from ..server_options import NODE_TIMEOUT_RANGE as NODE_TIMEOUT_RANGE

WEBHOOK_EVENT_TYPES = names.WEBHOOK_EVENT_TYPES


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    """One webhook endpoint of an app
    (https://pusher.com/docs/channels/server_api/webhooks/).

    :param url: the URL that receives the signed ``POST`` requests.
    :param event_types: the event types sent to this URL, or ``None`` (the
        default) for all seven webhook event types.
    :raises ValueError: if the URL is empty or an event type is unknown.
    """

    url: str
    event_types: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ValueError("WebhookConfig.url must be a non-empty string.")
        if self.event_types is not None:
            types = frozenset(self.event_types)
            unknown = types - WEBHOOK_EVENT_TYPES
            if unknown:
                raise ValueError(
                    f"Unknown webhook event types {sorted(unknown)}; "
                    f"choose among {sorted(WEBHOOK_EVENT_TYPES)}."
                )
            object.__setattr__(self, "event_types", types)

    def accepts(self, event_name: str) -> bool:
        """Return whether events named ``event_name`` go to this URL."""
        return self.event_types is None or event_name in self.event_types


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """One Pusher Channels app served by the server.

    The ``repr`` hides the secret. Limits and codes are Pusher's: its
    WebSocket protocol page
    (https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/),
    HTTP API page (https://pusher.com/docs/channels/library_auth_reference/rest-api/)
    and channel pages (https://pusher.com/docs/channels/using_channels/).

    :param app_id: the app ID used in HTTP API paths (``/apps/{app_id}/...``).
    :param key: the public key used in the WebSocket path (``/app/{key}``) and
        in ``auth_key``; an unknown key is refused with close code 4001.
    :param secret: the secret that signs subscriptions, signins, HTTP requests
        and webhooks.
    :param webhooks: where to send webhooks; none by default.
    :param enable_client_events: accept ``client-`` events. Default ``True``.
    :param enable_subscription_count: send ``pusher_internal:subscription_count``
        frames and ``subscription_count`` webhooks. Default ``True``.
    :param enable_user_authentication: accept ``pusher:signin``. Default ``True``.
    :param activity_timeout: seconds announced in
        ``pusher:connection_established``; the server pings a client that was
        silent that long. Default 120.
    :param pong_timeout: seconds to wait for any message after a server ping
        before closing with 4201. Default 30.
    :param max_presence_members: distinct users per presence channel. Default 100.
    :param max_client_events_per_second: client events per connection per
        second before ``pusher:error`` 4301. Default 10.
    :param max_event_size: bytes of event ``data`` accepted by the HTTP API
        before 413. Default 10240.
    :param max_watchlist: watchlist entries kept per user before
        ``pusher:error`` 4302. Default 100.
    :param cache_ttl: seconds a cache channel keeps its last event. Default 1800.
    :param enabled: ``False`` makes the app behave as a disabled Pusher app:
        WebSocket connections are refused with 4003 and HTTP API calls get 403.
        Default ``True``.
    :param max_connections: WebSocket connections of the app at once, counted
        across the nodes of a cluster; one more is closed with 4004
        ("Application is over connection quota", Pusher's code; soketi's and
        Reverb's ``max_connections``). Default ``None``: no quota.
    :param max_connections_per_address: WebSocket connections of the app
        from one client address at once, counted across the nodes of a
        cluster; one more is closed with 4004 ("Too many connections from
        this address"). The address is the TCP peer's, or the client's that a
        trusted proxy (``--trusted-proxy``) adds to ``X-Forwarded-For``;
        never a header from another peer. Default ``None``: no cap.
    :param max_subscriptions_per_connection: channels one connection may be
        subscribed to; one more is refused with ``pusher:subscription_error``
        (status 403, ``LimitReached``) and ``pusher:error`` code 4303.
        Default 1000.
    :param allowed_origins: the ``Origin`` hosts a WebSocket connection may
        come from, as Reverb's ``allowed_origins``: ``"example.com"``,
        ``"*.example.com"`` (shell-style patterns on the host) or ``"*"``;
        another origin, or none, is closed with 4009 ("Origin not allowed").
        Default ``None``: any origin.
    :param max_backend_events_per_second: events the HTTP API accepts per
        second (a batch counts each event), counted across the nodes of a
        cluster; more are answered 429 (soketi's ``max_backend_events_per_sec``).
        Default ``None``: no limit.
    :param max_read_requests_per_second: HTTP API reads (``GET`` channels,
        channel, users) per second across the cluster; more are answered 429
        (soketi's ``max_read_req_per_sec``). Default ``None``: no limit.
    :param max_subscription_changes_per_second: the pace of one connection's
        subscribes and unsubscribes, each costing one (a presence join or
        leave costs 10 plus one per member told of it: in a channel of 50
        members, 60): the flapper pays for what its members receive. A
        connection may spend ``max_subscriptions_per_connection`` at once (a
        reconnecting client subscribes to all its channels); over budget a
        subscription is refused with ``pusher:subscription_error`` (status
        429, ``LimitReached``) and ``pusher:error`` code 4304. Default 100.
    :param authorized_connections: close a connection that has neither signed
        in nor subscribed to a private or presence channel within
        ``user_authentication_timeout`` seconds with 4009, as Pusher's
        *authorized connections* (https://pusher.com/docs/channels/using_channels/authorized-connections/)
        and soketi's ``enableUserAuthentication``. Default ``False``.
    :param user_authentication_timeout: seconds a connection has to sign in
        under ``authorized_connections``. Default 30.
    :raises ValueError: if a credential is empty or a limit is not positive.
    """

    app_id: str
    key: str
    secret: str = dataclasses.field(repr=False)
    webhooks: Sequence[WebhookConfig] = ()
    enable_client_events: bool = True
    enable_subscription_count: bool = True
    enable_user_authentication: bool = True
    activity_timeout: int = 120
    pong_timeout: float = 30.0
    max_presence_members: int = 100
    max_client_events_per_second: int = 10
    max_event_size: int = 10240
    max_watchlist: int = 100
    cache_ttl: float = 1800.0
    enabled: bool = True
    max_connections: int | None = None
    max_connections_per_address: int | None = None
    max_subscriptions_per_connection: int = 1000
    allowed_origins: Sequence[str] | None = None
    max_backend_events_per_second: int | None = None
    max_read_requests_per_second: int | None = None
    max_subscription_changes_per_second: int = 100
    authorized_connections: bool = False
    user_authentication_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("app_id", "key", "secret"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"AppConfig.{name} must be a non-empty string.")
        if ":" in self.key:
            raise ValueError("AppConfig.key must not contain ':'.")
        object.__setattr__(self, "webhooks", tuple(self.webhooks))
        for name in (
            "activity_timeout",
            "pong_timeout",
            "max_presence_members",
            "max_client_events_per_second",
            "max_event_size",
            "max_watchlist",
            "cache_ttl",
            "max_subscriptions_per_connection",
            "max_subscription_changes_per_second",
            "user_authentication_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"AppConfig.{name} must be positive.")
        for name in (
            "max_connections",
            "max_connections_per_address",
            "max_backend_events_per_second",
            "max_read_requests_per_second",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"AppConfig.{name} must be a whole number or None.")
            if value is not None and value <= 0:
                raise ValueError(f"AppConfig.{name} must be positive (or None: no limit).")
        origins = self.allowed_origins
        if origins is not None:
            if isinstance(origins, str) or not all(isinstance(o, str) and o for o in origins):
                raise ValueError(
                    "AppConfig.allowed_origins must be a list of host patterns"
                    ' such as ["example.com", "*.example.com"], or None.'
                )
            object.__setattr__(self, "allowed_origins", tuple(o.lower() for o in origins))


_PREFIX = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a Prometheus metric name.

    :raises ValueError: if it cannot (letters, digits, ``_`` and ``:``, not a
        digit first; empty is allowed).
    """
    if prefix and not _PREFIX.match(prefix):
        raise ValueError(
            f"metrics prefix {prefix!r} is not a valid start of a Prometheus metric name:"
            " use letters, digits, '_' and ':' (not a digit first), e.g. 'pusher_'."
        )
    return prefix


#: The forms of Redis URL that redis-py's ``from_url`` takes.
REDIS_URL_FORMS = (
    "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS)"
    " or unix://[[USER]:PASSWORD@]/PATH/TO/SOCKET[?db=DB]"
)


def redis_url_problem(url: str) -> str | None:
    """What makes ``url`` no Redis URL (see :func:`check_redis_url`), or ``None``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("redis", "rediss", "unix"):
        return "its scheme is not redis, rediss or unix"
    if parts.scheme == "unix" and not parts.path:
        return "it has no socket path"
    if parts.scheme != "unix" and not re.fullmatch(r"/?[0-9]*", parts.path):
        return "its database is not a number"
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        return "its port is not a number from 0 to 65535"
    return None


def hide_password(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    password = urlsplit(url.strip()).password
    return url.replace(f":{password}@", ":***@") if password else url


def check_redis_url(url: str) -> str:
    """Return ``url`` if it has the form redis-py's ``Redis.from_url`` takes.

    The forms are those of `redis-py's from_url
    <https://redis.readthedocs.io/en/stable/connections.html#redis.Redis.from_url>`_:
    ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://`` (the same over
    TLS) and ``unix://[[USER]:PASSWORD@]/PATH/TO/SOCKET[?db=DB]``. Nothing is
    imported or connected to.

    :raises ValueError: if the scheme is none of those, the port is not a
        number, the database is not a number, or a ``unix://`` URL has no path.
    """
    problem = redis_url_problem(url)
    if problem:
        raise ValueError(
            f"{hide_password(url)!r} is not a Redis URL ({problem}): expected {REDIS_URL_FORMS}"
        )
    return url


def check_workers(workers: int, port: int, redis_url: str | None) -> None:
    """Check that ``workers`` server processes can share ``port``.

    :raises ValueError: for more than one worker without a Redis URL (the
        workers share their state through Redis), on port 0 (each worker would
        pick another port), or where the platform has no ``SO_REUSEPORT``.
    """
    if workers <= 1:
        return
    if not redis_url:
        raise ValueError(
            "--workers needs --redis: workers share state through Redis; add --redis URL"
        )
    if port == 0:
        raise ValueError("--workers needs a fixed --port: workers share one known port, not 0")
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError(
            "--workers needs SO_REUSEPORT, which this platform does not have:"
            " run one server per port instead, joined by the same --redis URL"
        )
