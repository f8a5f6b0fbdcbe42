"""What the I/O layer tells the metrics and the debug console: counts and
events of each received frame, HTTP API call and webhook attempt.

They match on the core's typed events (:mod:`flask_pusher.server.events`),
never on encoded frames, and count nothing the state already knows (that is
read when scraped, :mod:`flask_pusher.server.metrics`). Console events are
made only while a page watches (``Console.watching``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .console import Console
from .events import ProtocolError
from .events import SubscriptionRefused
from .events import SubscriptionSucceeded
from .http_api import APICall
from .metrics import IOCounts
from .metrics import WebhookFigures
from .state import AppState
from .state import Connection
from .state import Effects
from .webhooks import WebhookAttempt
from .webhooks import WebhookSender


def webhook_figures(webhooks: WebhookSender, app_id: str) -> WebhookFigures | None:
    """The webhook sender's figures of ``app_id`` for the metrics, if it sent any."""
    stats = webhooks.stats.get(app_id)
    if stats is None:
        return None
    return WebhookFigures(
        stats.sent,
        stats.failed_requests,
        stats.retrying,
        stats.queued,
        stats.dropped,
        stats.dropped_by_type,
    )


def webhook_attempt(console: Console | None, attempt: WebhookAttempt) -> None:
    """A webhook request was made: show it."""
    if console is not None and console.watching:
        console.emit("webhook", attempt.app_id, **attempt.fields())


def api_call(
    counts: dict[AppState, IOCounts] | None, console: Console | None, call: APICall
) -> None:
    """An HTTP API request was answered: count it, show it."""
    app = call.app
    if counts is not None and app is not None:
        c = counts[app]
        c.http_calls += 1
        c.http_received_bytes += call.received
        c.http_transmitted_bytes += call.sent
        c.http_responses[call.status] = c.http_responses.get(call.status, 0) + 1
    if console is None or not console.watching:
        return
    app_id = app.config.app_id if app is not None else None
    if call.status >= 300:
        fields = {"method": call.method, "path": call.path, "status": call.status}
        console.emit("api_error", app_id, error=call.error, request_id=call.id, **fields)
    elif app is not None and call.operation in ("trigger", "trigger_batch"):
        batch = call.operation == "trigger_batch"
        console.api_message(app, call.payload(), batch, "http", call.id)


def client(conn: Connection, request: web.Request) -> dict[str, Any]:
    """A console's view of a new connection: who, from where, with what."""
    return {
        "socket_id": conn.socket_id,
        "origin": request.headers.get("Origin"),
        "user_agent": request.headers.get("User-Agent"),
        "protocol": request.query.get("protocol"),
        "client": request.query.get("client"),
        "version": request.query.get("version"),
        "remote": request.remote,
    }


def subscribed(effects: Effects) -> bool:
    """Whether ``effects`` confirm a subscription."""
    return any(isinstance(send.event, SubscriptionSucceeded) for send in effects.sends)


Refusal = SubscriptionRefused | ProtocolError


def refusals(conn: Connection, effects: Effects) -> list[Refusal]:
    """The ``pusher:subscription_error`` and ``pusher:error`` frames a received
    frame got back (few: the common answers are not errors)."""
    return [
        send.event
        for send in effects.sends
        if isinstance(send.event, (SubscriptionRefused, ProtocolError)) and send.to == (conn,)
    ]


def count_refusals(counts: IOCounts, refusals: list[Refusal]) -> None:
    for refusal in refusals:
        if isinstance(refusal, SubscriptionRefused):
            status = refusal.status
            counts.subscription_errors[status] = counts.subscription_errors.get(status, 0) + 1
        elif refusal.code == 4301:
            counts.client_events_refused += 1


def show_receive(
    console: Console,
    conn: Connection,
    text: str,
    before: tuple[set[str], str | None],
    refusals: list[Refusal],
) -> None:
    """Console events of one received frame: what it changed, what it was refused."""
    app_id = conn.app.config.app_id
    channels, user_id = before
    sid = conn.socket_id
    for name in sorted(conn.channels - channels):
        console.emit("subscribed", app_id, socket_id=sid, channel=name, user_id=conn.user_id)
    for name in sorted(channels - conn.channels):
        console.emit("unsubscribed", app_id, socket_id=sid, channel=name, user_id=conn.user_id)
    if conn.user_id != user_id and conn.user_id is not None:
        console.emit("signin", app_id, socket_id=sid, user_id=conn.user_id, user=conn.user_info)
    for refusal in refusals:
        if isinstance(refusal, SubscriptionRefused):
            console.emit(
                "subscription_refused",
                app_id,
                socket_id=sid,
                channel=refusal.channel,
                status=refusal.status,
                reason=refusal.message,
                error_type=refusal.type,
            )
        else:
            kind = "client_event_refused" if refusal.code == 4301 else "error"
            console.emit(
                kind,
                app_id,
                socket_id=sid,
                user_id=conn.user_id,
                code=refusal.code,
                reason=refusal.message,
                frame=text[:2000],
            )
