"""Configuration of the apps a :class:`~flask_pusher.server.LocalServer` serves."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from .. import names

WEBHOOK_EVENT_TYPES = names.WEBHOOK_EVENT_TYPES


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    """One webhook endpoint of an app (reference §3).

    :param url: the URL that receives the signed ``POST`` requests.
    :param event_types: the event types sent to this URL, or ``None`` (the
        default) for all seven types of reference §3.2.
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
    """One Pusher Channels app served by the local server.

    The ``repr`` hides the secret.

    :param app_id: the app ID used in HTTP API paths (``/apps/{app_id}/...``).
    :param key: the public key used in the WebSocket path (``/app/{key}``) and
        in ``auth_key``; an unknown key is refused with close code 4001
        (reference §5.12).
    :param secret: the secret that signs subscriptions, signins, HTTP requests
        and webhooks.
    :param webhooks: where to send webhooks (reference §3); none by default.
    :param enable_client_events: accept ``client-`` events (reference §5.7).
        Default ``True``.
    :param enable_subscription_count: send ``pusher_internal:subscription_count``
        frames and ``subscription_count`` webhooks (reference §5.11). Default
        ``True``.
    :param enable_user_authentication: accept ``pusher:signin`` (reference
        §1.5). Default ``True``.
    :param activity_timeout: seconds announced in
        ``pusher:connection_established``; the server pings a client that was
        silent that long (reference §5.3, §5.4). Default 120.
    :param pong_timeout: seconds to wait for any message after a server ping
        before closing with 4201 (reference §5.4). Default 30.
    :param max_presence_members: distinct users per presence channel
        (reference §1.3). Default 100.
    :param max_client_events_per_second: client events per connection per
        second before ``pusher:error`` 4301 (reference §5.7). Default 10.
    :param max_event_size: bytes of event ``data`` accepted by the HTTP API
        before 413 (reference §4.4). Default 10240.
    :param max_watchlist: watchlist entries kept per user before
        ``pusher:error`` 4302 (reference §1.5). Default 100.
    :param cache_ttl: seconds a cache channel keeps its last event (reference
        §5.10). Default 1800.
    :param enabled: ``False`` makes the app behave as a disabled Pusher app:
        WebSocket connections are refused with 4003 and HTTP API calls get 403
        (reference §4.5, §5.12). Default ``True``.
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
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"AppConfig.{name} must be positive.")


#: The default start of every metric name (soketi's is ``soketi_``).
DEFAULT_METRICS_PREFIX = "pusher_"
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
