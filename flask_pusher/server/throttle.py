"""The one subscription-count throttle, used for the frames of the core and
the webhooks of the Redis backend.

Pusher sends ``pusher_internal:subscription_count`` (and the
``subscription_count`` webhook) when a channel's count changes, at most every
5 seconds for a channel with more than 100 subscribers
(https://pusher.com/docs/channels/server_api/webhooks/#subscription-count and
https://pusher.com/docs/channels/using_channels/events/#subscription-count-event):
a count above the threshold that comes sooner is held, and the latest held one
is sent once the interval is over.

Below the threshold the counts of one channel are coalesced too (issue 16:
churn on a small channel must not send a frame to every subscriber per
subscribe): the first change since the last :meth:`CountThrottle.due` is sent
at once, later ones are held and the latest is sent by the next ``due``, which
the server calls every heartbeat (1 s). A change still reaches the
subscribers within a second, and a channel gets at most two count frames per
heartbeat, whatever a client does.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic
from typing import TypeVar

#: Above this many subscribers, counts are sent at most every :data:`INTERVAL` seconds.
SUBSCRIBERS = 100
INTERVAL = 5.0

K = TypeVar("K", bound=Hashable)


class CountThrottle(Generic[K]):
    """When a count may be sent, per key (a channel name, or an app and a channel).

    It remembers a key only while that can change a decision: for
    :data:`INTERVAL` seconds after a count was sent, and while a count is
    held. :meth:`due` forgets the rest, :meth:`forget` a key at once (a
    vacated channel), so its size is bounded by the keys changed in the last
    interval, never by the keys ever seen.

    :param subscribers: counts above this are throttled. Default :data:`SUBSCRIBERS`.
    :param interval: seconds between two counts sent for one key, above the
        threshold. Default :data:`INTERVAL`.
    """

    __slots__ = ("_held", "_sent", "_window", "interval", "subscribers")

    def __init__(self, subscribers: int = SUBSCRIBERS, interval: float = INTERVAL) -> None:
        self.subscribers = subscribers
        self.interval = interval
        self._sent: dict[K, float] = {}
        #: The latest count held back, by key; due INTERVAL after ``_sent``,
        #: or at the next :meth:`due` for a count not above the threshold.
        self._held: dict[K, int] = {}
        #: The keys sent since the last :meth:`due`.
        self._window: set[K] = set()

    def offer(self, key: K, count: int, now: float) -> bool:
        """Whether ``count`` of ``key`` is sent now (it is then recorded as
        sent); else it is held until :meth:`due` gives it back.

        :param now: monotonic seconds.
        """
        last = self._sent.get(key)
        if count > self.subscribers and last is not None and now - last < self.interval:
            self._held[key] = count
            return False
        if key in self._window:  # coalesced: the latest goes at the next due()
            self._held[key] = count
            return False
        self._held.pop(key, None)
        self._sent[key] = now
        self._window.add(key)
        return True

    def due(self, now: float) -> list[tuple[K, int]]:
        """The held counts whose time has come (recorded as sent now), and
        forget the keys that no longer matter."""
        horizon = now - self.interval
        sent = self._sent
        small = self.subscribers
        ready = [
            (key, count)
            for key, count in self._held.items()
            if count <= small or sent[key] <= horizon
        ]
        window = self._window
        window.clear()
        for key, _ in ready:
            del self._held[key]
            sent[key] = now
            window.add(key)  # what changes before the next due() waits for it
        stale = [k for k, at in sent.items() if at <= horizon and k not in self._held]
        for key in stale:
            del sent[key]
        return ready

    def forget(self, key: K) -> None:
        """Forget ``key`` (its channel is vacant: nothing is held for it)."""
        self._sent.pop(key, None)
        self._held.pop(key, None)
        self._window.discard(key)

    def __len__(self) -> int:
        """How many keys are remembered."""
        return len(self._sent)  # every held key was sent before
