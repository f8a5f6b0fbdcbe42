"""Models that broadcast their own changes, as Laravel's ``BroadcastsEvents``
(https://laravel.com/docs/eloquent#model-broadcasting)::

    class Post(BroadcastsEvents, db.Model):
        __broadcast_fields__ = ("id", "title")
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str]

Each row created, updated or deleted through the session (``db.session.add``,
attribute changes, ``db.session.delete``) sends ``PostCreated``, ``PostUpdated``
or ``PostDeleted`` on ``private-App.Models.Post.{id}`` with
``{"model": {"id": ..., "title": ...}}``: Laravel's names, so Laravel Echo's
``.private("App.Models.Post.1").listen(".PostUpdated", ...)`` works as it is.
The events go through the outbox (``PUSHER_OUTBOX``) or after the commit; a
rollback sends none. Only the fields in ``__broadcast_fields__`` are sent
(default: the primary key only), never whole rows.

Bulk ``update()`` and ``delete()`` statements bypass the session's unit of work
and broadcast nothing, as in Laravel.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any
from typing import ClassVar

from flask import current_app
from flask import has_app_context
from sqlalchemy import event
from sqlalchemy import inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm import UOWTransaction

from . import transactions
from .broadcasting import BroadcastEvent
from .broadcasting import MAX_CHANNELS
from .delivery import batch_items
from .delivery import socket_id_to_exclude
from .holding import send_held
from .transactions import after_commit

#: The three model events, in Laravel's words.
CREATED, UPDATED, DELETED = "created", "updated", "deleted"


class BroadcastsEvents:
    """A mixin for Flask-SQLAlchemy (SQLAlchemy 2) models: broadcast created,
    updated and deleted rows. Put it before ``db.Model`` in the bases.

    Override the methods for other channels, names or payloads; each takes the
    event, ``"created"``, ``"updated"`` or ``"deleted"``.
    """

    #: The attributes in the payload's ``"model"`` object; empty: the primary key.
    __broadcast_fields__: ClassVar[tuple[str, ...]] = ()
    #: The channel name; ``{model}`` is the class name, ``{id}`` the primary key
    #: (several columns joined with ``-``). Laravel's convention by default.
    __broadcast_channel__: ClassVar[str] = "private-App.Models.{model}.{id}"
    #: Leave out the request's ``X-Socket-ID`` connection (Laravel's ``toOthers()``).
    __broadcast_to_others__: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        transactions.flush_before_commit = True

    def broadcast_on(self, event: str) -> str | Iterable[str]:
        """The channel(s) of ``event``; default :attr:`__broadcast_channel__` filled in."""
        return self.__broadcast_channel__.format(model=type(self).__name__, id=_key(self))

    def broadcast_as(self, event: str) -> str:
        """The event name: ``PostCreated``, ``PostUpdated``, ``PostDeleted``."""
        return f"{type(self).__name__}{event.capitalize()}"

    def broadcast_with(self, event: str) -> Any:
        """The payload: ``{"model": {field: value}}`` of :attr:`__broadcast_fields__`."""
        fields = self.__broadcast_fields__ or tuple(c.key for c in inspect(type(self)).primary_key)
        return {"model": {name: getattr(self, name) for name in fields}}

    def broadcast_when(self, event: str) -> bool:
        """Whether to broadcast ``event``; default ``True``."""
        return True


class ModelEvent(BroadcastEvent):
    """A model's change as a :class:`~flask_pusher.broadcasting.BroadcastEvent`,
    its channel, name and payload taken when the session flushes."""

    def __init__(self, model: BroadcastsEvents, event: str) -> None:
        self.event = event
        self.to_others = model.__broadcast_to_others__
        self._when = model.broadcast_when(event)
        self._on = model.broadcast_on(event) if self._when else ()
        self._as = model.broadcast_as(event)
        self._with = model.broadcast_with(event) if self._when else None

    def broadcast_on(self) -> str | Iterable[str]:
        return self._on

    def broadcast_as(self) -> str:
        return self._as

    def broadcast_with(self) -> Any:
        return self._with

    def broadcast_when(self) -> bool:
        return self._when


def _key(model: object) -> str:
    # In after_flush a new row has its primary key, not yet its identity key.
    values = inspect(type(model)).primary_key_from_instance(model)
    return "-".join(str(part) for part in values)


def _changes(session: Session) -> list[tuple[BroadcastsEvents, str]]:
    found: list[tuple[BroadcastsEvents, str]] = []
    for obj in session.new:
        if isinstance(obj, BroadcastsEvents):
            found.append((obj, CREATED))
    for obj in session.dirty:
        if isinstance(obj, BroadcastsEvents) and session.is_modified(
            obj, include_collections=False
        ):
            found.append((obj, UPDATED))
    for obj in session.deleted:
        if isinstance(obj, BroadcastsEvents):
            found.append((obj, DELETED))
    return found


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    """Broadcast the flushed changes of :class:`BroadcastsEvents` models.

    In ``after_flush`` the session still lists what the flush wrote (``new``,
    ``dirty``, ``deleted``) and new rows have their primary keys
    (https://docs.sqlalchemy.org/en/20/orm/events.html#sqlalchemy.orm.SessionEvents.after_flush).
    """
    changes = _changes(session)
    if not changes or not has_app_context():
        return
    pusher = current_app.extensions.get("pusher")
    if pusher is None:
        return
    for model, name in changes:
        event_object = ModelEvent(model, name)
        if event_object.broadcast_when():
            _broadcast(pusher, session, event_object)


def _broadcast(pusher: Any, session: Session, event_object: ModelEvent) -> None:
    """Into the outbox, or held until commit, in the flushing session's transaction
    (which need not be ``db.session``)."""
    settings = pusher.settings
    outbox = pusher.outbox if settings.outbox else None
    client = pusher.client
    target = event_object.broadcast_on()
    channels = [target] if isinstance(target, str) else list(target)
    socket_id = socket_id_to_exclude() if event_object.to_others else None
    for start in range(0, len(channels), MAX_CHANNELS):
        request = client.trigger_request(
            channels[start : start + MAX_CHANNELS],
            event_object.broadcast_as(),
            event_object.broadcast_with(),
            socket_id,
        )
        if outbox is not None and client.recorder is None:
            outbox.write(batch_items(request), session)
        else:
            after_commit(session, partial(send_held, client, request, settings.defer))
