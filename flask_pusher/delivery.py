"""How the events of a request leave it: "to others", and after the response.

- :func:`socket_id_to_exclude` reads the page's socket id from the ``X-Socket-ID``
  header, the convention of Laravel Echo (https://laravel.com/docs/broadcasting#only-to-others),
  which ``flask-pusher.js`` follows.
- :func:`defer` queues the events of a signed trigger request in ``g``; once the
  response is ready they are sent from Werkzeug's ``response.call_on_close``, after
  the client has its response, coalesced into ``POST /apps/{app_id}/batch_events``
  requests of at most 10 events (https://pusher.com/docs/channels/library_auth_reference/rest-api/#post-batch-events).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any
from typing import TYPE_CHECKING

from flask import after_this_request
from flask import g
from flask import has_request_context
from flask import request
from flask import Response

from . import names

if TYPE_CHECKING:
    from pusher.http import Request

    from .client import PusherClient

log = logging.getLogger("flask_pusher")

#: The header that carries the page's socket id.
SOCKET_ID_HEADER = "X-Socket-ID"
#: Pusher's limit of events in one ``batch_events`` request.
MAX_BATCH_EVENTS = 10


def socket_id_to_exclude() -> str | None:
    """The ``X-Socket-ID`` header of the current request, if it is a valid socket id.

    ``None`` outside a request, with no header, or with an invalid one: an invalid
    header is ignored (logged at debug level), so the event goes to every
    connection rather than the request failing.
    """
    if not has_request_context():
        return None
    value = request.headers.get(SOCKET_ID_HEADER)
    if value is None:
        return None
    if names.valid_socket_id(value):
        return value
    log.debug("Ignored an invalid %s header: %r", SOCKET_ID_HEADER, value[:50])
    return None


def batch_items(request: Request) -> list[dict[str, Any]]:
    """The ``batch_events`` items of a signed ``events`` or ``batch_events`` request.

    An event on several channels becomes one item per channel: a batch item names
    one channel.
    """
    params = request.params
    if "batch" in params:
        return [dict(item) for item in params["batch"]]
    extra = {"socket_id": params["socket_id"]} if params.get("socket_id") else {}
    return [
        {"channel": channel, "name": params["name"], "data": params["data"], **extra}
        for channel in params["channels"]
    ]


def chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclasses.dataclass
class DeferredEvents:
    """The events a request deferred, kept in ``g._pusher_deferred``."""

    client: PusherClient
    items: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    handed_over: bool = False
    sent: bool = False

    def hand_over(self, response: Response) -> Response:
        """An ``after_this_request`` function: send after ``response``, or drop."""
        self.handed_over = True
        if response.status_code >= 500:
            self.drop(f"the response is {response.status}")
        elif self.client.recorder is not None:
            self.send()  # record_events(): record them now, with deferred=True
        else:
            response.call_on_close(self.send)
        return response

    def drop(self, reason: str) -> None:
        if self.items:
            log.info("Dropped %d deferred Pusher event(s): %s.", len(self.items), reason)
        self.items = []
        self.sent = True

    def send(self) -> None:
        """Send the events in order, 10 to a request; log what fails."""
        self.sent = True
        items, self.items = self.items, []
        for batch in chunks(items, MAX_BATCH_EVENTS):
            try:
                request = self.client.trigger_batch_request(batch, already_encoded=True)
                self.client.send(request, deferred=True)
            except Exception as e:
                events = ", ".join(f"{item['name']} on {item['channel']}" for item in batch)
                log.error(
                    "Sending %d deferred Pusher event(s) failed (%s): %s: %s",
                    len(batch),
                    events,
                    type(e).__name__,
                    e,
                )


def defer(client: PusherClient, request: Request) -> bool:
    """Queue the events of ``request`` until the current response is sent.

    :returns: ``False`` outside a request, or once the request's deferred events
        were sent: then the caller sends ``request`` at once.
    """
    if not has_request_context():
        return False
    queue: DeferredEvents | None = g.get("_pusher_deferred")
    if queue is None:
        queue = g._pusher_deferred = DeferredEvents(client)
        after_this_request(queue.hand_over)
    if queue.sent:
        return False
    queue.items.extend(batch_items(request))
    return True


def drop_unsent(exc: BaseException | None) -> None:
    """A ``teardown_request`` function: drop what an unhandled exception left unsent."""
    queue: DeferredEvents | None = g.get("_pusher_deferred")
    if queue is not None and not queue.handed_over:
        queue.drop(f"the view raised {type(exc).__name__}" if exc else "no response was sent")
