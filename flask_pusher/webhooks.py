"""Webhooks: the handler registry, request verification and dispatch.

Pusher POSTs ``{"time_ms": ..., "events": [...]}`` signed with ``X-Pusher-Key`` and
``X-Pusher-Signature`` (HMAC-SHA256 of the raw body), as
https://pusher.com/docs/channels/server_api/webhooks/ describes. Each verified
event goes to the handlers registered for its name, in order; then each group
handler (the old Flask-Pusher contract: no arguments, read the request) runs once
per request whose events include its group.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from flask import current_app
from flask import g
from pusher.signature import sign

from . import names
from .errors import InvalidWebhook
from .errors import WebhookHandlerError
from .errors import WebhookVerificationError
from .settings import PusherSettings

F = TypeVar("F", bound=Callable[..., Any])

#: The event types of each per-type webhook URL, as Pusher's dashboard groups them.
GROUPS: dict[str, tuple[str, ...]] = names.WEBHOOK_GROUPS
GROUP_OF_EVENT = {name: group for group, names in GROUPS.items() for name in names}
EVENT_NAMES = names.WEBHOOK_EVENT_TYPES


class Webhooks:
    """The webhook handler registry, available as ``pusher.webhooks``.

    Register per-event handlers with :meth:`on`, and group handlers with
    :meth:`channel_existence`, :meth:`presence`, :meth:`client`,
    :meth:`cache_miss` and :meth:`subscription_count`. Handlers run in the request
    context and may be ``async def``. A handler that raises makes the route answer
    500, so that Pusher retries the webhook.
    """

    def __init__(self) -> None:
        self._event_handlers: dict[str, list[Callable[[dict[str, Any]], Any]]] = {}
        self._group_handlers: dict[str, list[Callable[[], Any]]] = {}

    def on(self, event_name: str) -> Callable[[F], F]:
        """Register a handler for one event type, called once per event.

        ``handler(event: dict) -> None`` receives the event as Pusher sent it, for
        example ``{"name": "member_added", "channel": "presence-room", "user_id": "7"}``
        Several handlers of one name run in registration order.

        :param event_name: ``channel_occupied``, ``channel_vacated``,
            ``member_added``, ``member_removed``, ``client_event``, ``cache_miss``
            or ``subscription_count``.
        :raises ValueError: for another name.
        """
        if event_name not in EVENT_NAMES:
            raise ValueError(
                f"Unknown webhook event {event_name!r}; expected one of"
                f" {', '.join(sorted(EVENT_NAMES))}."
            )

        def decorator(handler: F) -> F:
            self._event_handlers.setdefault(event_name, []).append(handler)
            return handler

        return decorator

    def _group(self, group: str, handler: F) -> F:
        self._group_handlers.setdefault(group, []).append(handler)
        return handler

    def channel_existence(self, handler: F) -> F:
        """Register ``handler()``, run once per webhook with ``channel_occupied`` or
        ``channel_vacated`` events. Read them from :attr:`payload` or ``request.json``."""
        return self._group("channel_existence", handler)

    def presence(self, handler: F) -> F:
        """Register ``handler()``, run once per webhook with ``member_added`` or
        ``member_removed`` events."""
        return self._group("presence", handler)

    def client(self, handler: F) -> F:
        """Register ``handler()``, run once per webhook with ``client_event`` events."""
        return self._group("client", handler)

    def cache_miss(self, handler: F) -> F:
        """Register ``handler()``, run once per webhook with ``cache_miss`` events."""
        return self._group("cache_miss", handler)

    def subscription_count(self, handler: F) -> F:
        """Register ``handler()``, run once per webhook with ``subscription_count`` events."""
        return self._group("subscription_count", handler)

    @property
    def payload(self) -> dict[str, Any]:
        """The verified webhook being handled: ``{"time_ms": int, "events": [dict]}``.

        :raises RuntimeError: outside a webhook request.
        """
        payload: dict[str, Any] | None = g.get("_pusher_webhook")
        if payload is None:
            raise RuntimeError("pusher.webhooks.payload is only set while a webhook is handled.")
        return payload

    def dispatch(self, payload: dict[str, Any]) -> None:
        """Run the handlers for a verified payload, in the request context.

        :raises WebhookHandlerError: a handler raised; the error is logged.
        """
        g._pusher_webhook = payload
        groups: list[str] = []
        try:
            for event in payload["events"]:
                for handler in self._event_handlers.get(event["name"], ()):
                    current_app.ensure_sync(handler)(event)
                group = GROUP_OF_EVENT.get(event["name"])
                if group and group not in groups:
                    groups.append(group)
            for group in groups:
                for group_handler in self._group_handlers.get(group, ()):
                    current_app.ensure_sync(group_handler)()
        except Exception as e:
            current_app.logger.exception("A Pusher webhook handler raised")
            raise WebhookHandlerError(
                "A webhook handler failed; the webhook will be retried."
            ) from e


def verify(
    settings: PusherSettings, key: str | None, signature: str | None, body: bytes
) -> dict[str, Any]:
    """Verify a webhook request and return its parsed body.

    Checks, in order: ``X-Pusher-Key`` is the app key; ``X-Pusher-Signature`` is the
    HMAC-SHA256 hex of the raw body (constant time); the body is
    ``{"time_ms": int, "events": [{"name": str, ...}, ...]}``; ``time_ms`` is within
    ``PUSHER_WEBHOOK_TOLERANCE`` seconds of now (300 by default, as the official
    library's ``validate_webhook``).

    :raises WebhookVerificationError: a missing or wrong key or signature, or a
        stale ``time_ms`` (401).
    :raises InvalidWebhook: a signed body of the wrong shape (400).
    """
    if not key:
        raise WebhookVerificationError("The X-Pusher-Key header is missing.")
    if not hmac.compare_digest(key.encode(), settings.key.encode()):
        raise WebhookVerificationError("The X-Pusher-Key header is not this app's key.")
    if not signature:
        raise WebhookVerificationError("The X-Pusher-Signature header is missing.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookVerificationError("The X-Pusher-Signature does not match the body.") from None
    if not hmac.compare_digest(signature.encode(), sign(settings.secret, text).encode()):
        raise WebhookVerificationError("The X-Pusher-Signature does not match the body.")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidWebhook("The webhook body is not JSON.") from None
    if not isinstance(payload, dict):
        raise InvalidWebhook("The webhook body is not a JSON object.")
    time_ms = payload.get("time_ms")
    if (
        isinstance(time_ms, bool)
        or not isinstance(time_ms, (int, float))
        or (isinstance(time_ms, float) and not math.isfinite(time_ms))
    ):
        raise InvalidWebhook("The webhook body has no numeric time_ms.")
    events = payload.get("events")
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) for e in events
    ):
        raise InvalidWebhook("The webhook body's events must be a list of objects with a name.")
    # Integer milliseconds: a huge JSON integer must not overflow a float.
    if abs(time.time_ns() // 1_000_000 - time_ms) > settings.webhook_tolerance * 1000:
        raise WebhookVerificationError(
            f"The webhook's time_ms is more than {settings.webhook_tolerance:g} s from"
            " this server's time (time_ms is in milliseconds)."
        )
    return payload
