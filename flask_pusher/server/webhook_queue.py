"""A webhook URL's queue, where a flood cannot evict the app's own events.

Anyone holding the public key can make a server emit ``channel_occupied``,
``channel_vacated`` and ``subscription_count`` webhooks by the thousand
(subscription churn over many public channels); the app's member, client and
cache-miss events must not be the ones dropped when the queue is full (issue
16). :class:`EventQueue` keeps the two kinds in two queues: events leave in
the order they came (:meth:`EventQueue.popleft` takes the older head), but
:meth:`EventQueue.evict` takes a flood event as long as there is one. The
state events are those of Pusher's "channel existence" and "subscription
count" webhooks
(https://pusher.com/docs/channels/server_api/webhooks/#channel-existence-events).
"""

from __future__ import annotations

import collections
import dataclasses

#: Webhook event types any client can cause in bulk: evicted first.
FLOODS = frozenset({"channel_occupied", "channel_vacated", "subscription_count"})

#: (monotonic time queued, event JSON, token).
Entry = tuple[float, str, "str | None"]


class EventQueue:
    """Two queues in one, oldest first: state events and the others."""

    __slots__ = ("_floods", "_others")

    def __init__(self) -> None:
        self._floods: collections.deque[tuple[Entry, str]] = collections.deque()
        self._others: collections.deque[tuple[Entry, str]] = collections.deque()

    def append(self, entry: Entry, name: str) -> None:
        """Queue ``entry`` of an event named ``name``."""
        (self._floods if name in FLOODS else self._others).append((entry, name))

    def _head(self) -> collections.deque[tuple[Entry, str]]:
        floods, others = self._floods, self._others
        if not floods:
            return others
        if not others:
            return floods
        return floods if floods[0][0][0] <= others[0][0][0] else others

    def __getitem__(self, index: int) -> Entry:
        """The oldest entry (only ``[0]``)."""
        if index != 0:
            raise IndexError("only the oldest entry, [0], is read")
        return self._head()[0][0]

    def popleft(self) -> Entry:
        """Take the oldest entry, of either kind.

        :raises IndexError: if empty.
        """
        return self._head().popleft()[0]

    def evict(self) -> tuple[Entry, str]:
        """Take the oldest state event if there is one, else the oldest entry:
        ``(entry, event type)``.

        :raises IndexError: if empty.
        """
        return (self._floods or self._others).popleft()

    @property
    def floods(self) -> int:
        """How many state events wait."""
        return len(self._floods)

    def __len__(self) -> int:
        return len(self._floods) + len(self._others)

    def __bool__(self) -> bool:
        return bool(self._floods or self._others)


@dataclasses.dataclass
class WebhookStats:
    """Webhook figures of one app, updated as deliveries happen.

    Gauges (current values): ``queued`` events and ``queued_bytes`` of their
    JSON waiting or in flight, across the app's URLs; ``retrying`` events in
    requests that failed at least once and will be tried again; ``failing_urls``,
    URLs whose last request failed.

    Counters (since start): ``sent`` events delivered (2xx answer); ``requests``
    made and ``failed_requests`` among them; events dropped because the queue
    was full (``dropped_full``), because they were still undelivered
    ``retry_for`` seconds after being queued (``dropped_expired``), or because
    they were still pending when the server shut down (``dropped_shutdown``);
    ``dropped_by_type``: the events dropped because the queue was full, by
    event type (``channel_occupied``, ...). An event sent to two URLs counts twice.
    """

    queued: int = 0
    queued_bytes: int = 0
    retrying: int = 0
    failing_urls: int = 0
    sent: int = 0
    requests: int = 0
    failed_requests: int = 0
    dropped_full: int = 0
    dropped_expired: int = 0
    dropped_shutdown: int = 0
    dropped_by_type: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def dropped(self) -> int:
        """All events dropped, for whatever reason."""
        return self.dropped_full + self.dropped_expired + self.dropped_shutdown
