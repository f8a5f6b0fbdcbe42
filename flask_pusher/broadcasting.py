"""Event classes that broadcast themselves, as Laravel's ``ShouldBroadcast``
(https://laravel.com/docs/broadcasting#defining-broadcast-events)::

    @dataclasses.dataclass
    class OrderShipped(BroadcastEvent):
        order_id: int
        status: str

        def broadcast_on(self) -> str:
            return f"private-orders.{self.order_id}"

    pusher.broadcast(OrderShipped(order.id, "shipped"))

=======================  =====================================  ===========================
Laravel                  :class:`BroadcastEvent`                default
=======================  =====================================  ===========================
``broadcastOn()``        :meth:`~BroadcastEvent.broadcast_on`   (required)
``broadcastAs()``        :meth:`~BroadcastEvent.broadcast_as`   the class name
``broadcastWith()``      :meth:`~BroadcastEvent.broadcast_with` the dataclass fields, or the
                                                                public attributes
``broadcastWhen()``      :meth:`~BroadcastEvent.broadcast_when` ``True``
``->toOthers()``         :attr:`~BroadcastEvent.to_others`      ``False``
``ShouldBroadcastNow``   ``pusher.broadcast(event, now=True)``  through the outbox, else
                                                                after commit, else now
=======================  =====================================  ===========================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .extension import Pusher

#: Pusher's limit of channels in one trigger (reference §4.4).
MAX_CHANNELS = 100


class BroadcastEvent:
    """An application event that knows where and how it is broadcast.

    Subclass it (a dataclass is the usual shape) and define :meth:`broadcast_on`;
    send it with :meth:`flask_pusher.Pusher.broadcast`.
    """

    #: Leave out the connection named by the request's ``X-Socket-ID`` header
    #: (Laravel's ``toOthers()``; see :doc:`/to-others`).
    to_others: bool = False

    def broadcast_on(self) -> str | Iterable[str]:
        """The channel name, or names, the event goes on.

        :raises NotImplementedError: unless a subclass defines it.
        """
        raise NotImplementedError(f"{type(self).__name__} must define broadcast_on()")

    def broadcast_as(self) -> str:
        """The event name (at most 200 characters); default the class name."""
        return type(self).__name__

    def broadcast_with(self) -> Any:
        """The event data (JSON-encodable with the app's JSON provider, at most
        10 KB encoded); default the dataclass fields, or the public instance
        attributes."""
        if hasattr(type(self), "__dataclass_fields__"):
            instance: Any = self
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(instance)}
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def broadcast_when(self) -> bool:
        """Whether to broadcast at all; default ``True``."""
        return True


def broadcast(pusher: Pusher, event: BroadcastEvent, *, now: bool = False) -> bool:
    """Send ``event`` with ``pusher``; see :meth:`flask_pusher.Pusher.broadcast`."""
    if not event.broadcast_when():
        return False
    target = event.broadcast_on()
    channels = [target] if isinstance(target, str) else list(target)
    if not channels:
        return False
    name = event.broadcast_as()
    data = event.broadcast_with()
    options: dict[str, Any] = {"to_others": event.to_others}
    if now:
        options.update(outbox=False, after_commit=False)
    elif not pusher.settings.outbox:
        options["after_commit"] = pusher.can_hold
    for start in range(0, len(channels), MAX_CHANNELS):
        pusher.trigger(channels[start : start + MAX_CHANNELS], name, data, **options)
    return True
