"""Prometheus metrics of one server, in the text format of ``GET /metrics``.

Written with the ``prometheus-client`` library, on a registry of the server's
own (several servers may run in one process). The names are soketi's
(https://docs.soketi.app/advanced-usage/prometheus-metrics), after a
configurable prefix, so that dashboards and alerts made for soketi carry over;
the others are this server's additions.

Nothing is counted through the library on the hot path: the I/O layer
(:mod:`flask_pusher.server.app`, :mod:`flask_pusher.server.http_api`) adds to
plain integers in one :class:`IOCounts` per app (bytes once per flush, not per
write), and :class:`Metrics` reads them when scraped. What the state already
knows (connections, occupied channels, presence members, webhook queues) is
read from it at scrape time, through
:class:`~flask_pusher.server.state.AppState`'s methods and the webhook sender's
``stats``: nothing is counted twice.

Every sample has the labels ``app_id`` (but the event-loop lag) and ``node``,
the name of this server process (default ``HOST:PORT`` of the machine's host
name), so that the figures of several server processes can be told apart
(and summed) once they share their apps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.core import Metric
from prometheus_client.core import UnknownMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from .. import names
from .config import check_prefix
from .config import DEFAULT_METRICS_PREFIX
from .state import AppState


@dataclasses.dataclass(slots=True)
class IOCounts:
    """What the I/O layer counted for one app since the server started.

    Plain integers, added to where the I/O layer already is; read at scrape time.
    """

    new_connections: int = 0
    disconnections: int = 0
    socket_received_bytes: int = 0
    socket_transmitted_bytes: int = 0
    ws_messages_received: int = 0
    ws_messages_sent: int = 0
    http_received_bytes: int = 0
    http_transmitted_bytes: int = 0
    http_calls: int = 0
    #: ``pusher:subscription_error`` frames sent, by their ``status``.
    subscription_errors: dict[int, int] = dataclasses.field(default_factory=dict)
    #: Client events refused with 4301 (over the rate limit).
    client_events_refused: int = 0
    #: HTTP API answers, by status code.
    http_responses: dict[int, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookFigures:
    """The webhook figures of one app the metrics need (from the webhook sender)."""

    sent: int
    failed_requests: int
    retrying: int
    queued: int
    dropped: int
    #: Events dropped from a full queue, by event type.
    dropped_by_type: dict[str, int] = dataclasses.field(default_factory=dict)


class Metrics:
    """The collector of one server, on its own :class:`CollectorRegistry`.

    :param apps: the server's apps, by app ID (the core's state).
    :param webhooks: returns the :class:`WebhookFigures` of an app ID, or
        ``None`` if it had no webhook yet.
    :param prefix: put before every name. Default ``"pusher_"``
        (``--metrics-prefix``).
    :param node: the ``node`` label of every sample.
    :raises ValueError: for a prefix that cannot start a metric name.
    """

    def __init__(
        self,
        apps: Mapping[str, AppState],
        webhooks: Callable[[str], WebhookFigures | None],
        prefix: str = DEFAULT_METRICS_PREFIX,
        node: str = "",
    ) -> None:
        self.apps = apps
        self.webhooks = webhooks
        self.prefix = check_prefix(prefix)
        self.node = node
        #: :class:`IOCounts` by app state, filled by the I/O layer.
        self.counts: dict[AppState, IOCounts] = {app: IOCounts() for app in apps.values()}
        #: Seconds the event loop was late on its last heartbeat (set by the server).
        self.loop_lag = 0.0
        #: In a cluster: returns whether Redis is reachable and how many events
        #: could not be published to the other nodes (set by the server).
        self.cluster: Callable[[], tuple[bool, int]] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, for an ``Accept`` header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # -- the collector ----------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Every metric family, read now (``prometheus_client``'s collector protocol)."""
        rows: dict[str, list[tuple[list[str], float]]] = {name: [] for name in _FAMILIES}
        for app_id, app in self.apps.items():
            key = [app_id, self.node]
            counts = self.counts[app]
            occupied = members = 0
            for name, channel_counts in app.occupied():
                occupied += 1
                if name.startswith(names.PRESENCE_PREFIX):
                    members += channel_counts.user_count
            for name, value in (
                ("connected", len(app.connections)),
                ("new_connections_total", counts.new_connections),
                ("new_disconnections_total", counts.disconnections),
                ("socket_received_bytes", counts.socket_received_bytes),
                ("socket_transmitted_bytes", counts.socket_transmitted_bytes),
                ("ws_messages_received_total", counts.ws_messages_received),
                ("ws_messages_sent_total", counts.ws_messages_sent),
                ("http_received_bytes", counts.http_received_bytes),
                ("http_transmitted_bytes", counts.http_transmitted_bytes),
                ("http_calls_received_total", counts.http_calls),
                ("client_events_refused_total", counts.client_events_refused),
                ("occupied_channels", occupied),
                ("presence_members", members),
            ):
                rows[name].append((key, value))
            for status, number in sorted(counts.http_responses.items()):
                rows["http_responses_total"].append(([*key, str(status)], number))
            for limit, number in sorted(app.refused.items()):
                rows["limit_refusals_total"].append(([*key, limit], number))
            for code, number in sorted(counts.subscription_errors.items()):
                rows["subscription_errors_total"].append(([*key, str(code)], number))
            hooks = self.webhooks(app_id)
            if hooks is not None:
                rows["webhooks_sent_total"].append((key, hooks.sent))
                rows["webhooks_failed_total"].append((key, hooks.failed_requests))
                rows["webhooks_dropped_total"].append((key, hooks.dropped))
                rows["webhooks_retrying"].append((key, hooks.retrying))
                rows["webhooks_queued"].append((key, hooks.queued))
                for kind, number in sorted(hooks.dropped_by_type.items()):
                    rows["webhooks_dropped_full_total"].append(([*key, kind], number))
        rows["event_loop_lag_seconds"].append(([self.node], self.loop_lag))
        for name, (kind, labels, doc) in _FAMILIES.items():
            family = _KINDS[kind](self.prefix + name, doc, labels=labels)
            for values, sample in rows[name]:
                family.add_metric(values, sample)
            yield family
        if self.cluster is not None:
            up, unpublished = self.cluster()
            gauge = GaugeMetricFamily(
                self.prefix + "cluster_redis_up",
                "1 while this node reaches the cluster's Redis, else 0.",
                labels=["node"],
            )
            gauge.add_metric([self.node], 1 if up else 0)
            yield gauge
            counter = CounterMetricFamily(
                self.prefix + "cluster_events_unpublished_total",
                "Events this node delivered to its own clients only: Redis was unreachable.",
                labels=["node"],
            )
            counter.add_metric([self.node], unpublished)
            yield counter


_APP = ["app_id", "node"]
_KINDS = {
    "gauge": GaugeMetricFamily,
    "counter": CounterMetricFamily,
    "untyped": UnknownMetricFamily,
}
#: Every metric: name after the prefix, (type, labels, help). soketi's ten first.
#: prometheus-client appends ``_total`` to a counter's name: soketi's four byte
#: counters keep their names (no ``_total``) as untyped metrics.
_FAMILIES: dict[str, tuple[str, list[str], str]] = {
    "connected": ("gauge", _APP, "Connected WebSocket clients."),
    "new_connections_total": ("counter", _APP, "WebSocket connections accepted."),
    "new_disconnections_total": ("counter", _APP, "WebSocket connections ended."),
    "socket_received_bytes": ("untyped", _APP, "Bytes of WebSocket messages received (counter)."),
    "socket_transmitted_bytes": ("untyped", _APP, "Bytes of WebSocket frames sent (counter)."),
    "ws_messages_received_total": ("counter", _APP, "WebSocket messages received."),
    "ws_messages_sent_total": ("counter", _APP, "WebSocket messages sent."),
    "http_received_bytes": ("untyped", _APP, "Bytes of HTTP API request bodies (counter)."),
    "http_transmitted_bytes": ("untyped", _APP, "Bytes of HTTP API response bodies (counter)."),
    "http_calls_received_total": ("counter", _APP, "HTTP API requests."),
    "http_responses_total": ("counter", [*_APP, "status"], "HTTP API answers by status."),
    "subscription_errors_total": (
        "counter",
        [*_APP, "code"],
        "Subscriptions refused, by status (401 signature, 403 full, 400 bad name).",
    ),
    "client_events_refused_total": (
        "counter",
        _APP,
        "Client events refused over the rate limit (error 4301).",
    ),
    "limit_refusals_total": (
        "counter",
        [*_APP, "limit"],
        "Refusals by the app's limits, by config field (max_connections and"
        " max_connections_per_address 4004,"
        " allowed_origins and authorized_connections 4009, max_subscriptions_per_connection,"
        " max_backend_events_per_second and max_read_requests_per_second 429).",
    ),
    "occupied_channels": ("gauge", _APP, "Channels with subscribers (on this node)."),
    "presence_members": (
        "gauge",
        _APP,
        "Presence members, summed over channels (on this node: a member with "
        "connections on two nodes of a cluster counts on both).",
    ),
    "webhooks_sent_total": ("counter", _APP, "Webhook events delivered (2xx answer)."),
    "webhooks_failed_total": ("counter", _APP, "Webhook requests that failed."),
    "webhooks_dropped_total": ("counter", _APP, "Webhook events given up."),
    "webhooks_dropped_full_total": (
        "counter",
        [*_APP, "type"],
        "Webhook events dropped from a full queue, by event type (state events first).",
    ),
    "webhooks_retrying": ("gauge", _APP, "Webhook events in requests to be retried."),
    "webhooks_queued": ("gauge", _APP, "Webhook events waiting or in flight."),
    "event_loop_lag_seconds": (
        "gauge",
        ["node"],
        "How late the event loop ran its last heartbeat, in seconds.",
    ),
}
