"""Where a triggered event goes when it must not leave before the data: the
outbox, or held until the session's transaction commits.

:meth:`flask_pusher.Pusher.trigger` (and ``trigger_batch``, ``send_to_user``)
call :func:`hold` with the signed request; it answers whether it took the
events. The precedence, for each call:

1.  the outbox (``outbox=True``, or ``None`` with ``PUSHER_OUTBOX`` on): the
    events are inserted in the caller's transaction (:mod:`flask_pusher.outbox`);
2.  after commit (``after_commit=True``, or ``None`` with ``PUSHER_AFTER_COMMIT``
    on): the request is sent once ``db.session``'s transaction commits
    (:mod:`flask_pusher.transactions`);
3.  otherwise the caller sends it (after the response with ``defer``, or at once).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from typing import TYPE_CHECKING

from flask import Flask

from . import delivery
from .delivery import batch_items
from .errors import ConfigurationError

if TYPE_CHECKING:
    from pusher.http import Request

    from .client import PusherClient
    from .outbox import Outbox
    from .settings import PusherSettings

log = logging.getLogger("flask_pusher")


@dataclasses.dataclass(frozen=True)
class Holding:
    """One app's means of holding events: its Flask-SQLAlchemy ``db`` and outbox."""

    db: Any
    outbox: Outbox | None


def setup(app: Flask, settings: PusherSettings) -> Holding | None:
    """Find the app's Flask-SQLAlchemy and define the outbox, if the settings need them.

    Without ``PUSHER_OUTBOX`` and ``PUSHER_AFTER_COMMIT`` it still finds
    Flask-SQLAlchemy when it is on the app, for ``after_commit=True`` calls.

    :raises ConfigurationError: ``PUSHER_OUTBOX`` or ``PUSHER_AFTER_COMMIT`` is on
        and Flask-SQLAlchemy is not initialised on ``app`` (before ``pusher.init_app``).
    """
    needed = settings.outbox or settings.after_commit
    if not needed and "sqlalchemy" not in app.extensions:
        return None
    try:
        from .outbox import check_database
        from .outbox import find_db
        from .outbox import Outbox
    except ImportError as e:  # SQLAlchemy is not installed
        if not needed:
            return None
        key = "PUSHER_OUTBOX" if settings.outbox else "PUSHER_AFTER_COMMIT"
        raise ConfigurationError(
            f"{key} needs Flask-SQLAlchemy: pip install 'Flask-Pusher[sqlalchemy]' ({e})."
        ) from None
    db = find_db(app, "PUSHER_OUTBOX" if settings.outbox else "PUSHER_AFTER_COMMIT")
    outbox = None
    if settings.outbox:
        check_database(db, app)
        outbox = Outbox(app, db, settings)
    return Holding(db, outbox)


def hold(
    holding: Holding | None,
    settings: PusherSettings,
    client: PusherClient,
    request: Request,
    after_commit: bool | None,
    outbox: bool | None,
    defer: bool = False,
) -> bool:
    """Take the events of ``request`` into the outbox or hold it until commit.

    :param defer: held until commit, then sent after the response
        (:func:`flask_pusher.delivery.defer`) when the commit happens in a request.

    :returns: ``False`` when the caller must send ``request`` itself.
    :raises RuntimeError: ``outbox=True`` or ``after_commit=True`` on an app
        without the outbox or Flask-SQLAlchemy.
    """
    use_outbox = settings.outbox if outbox is None else outbox
    use_commit = settings.after_commit if after_commit is None else after_commit
    if not use_outbox and not use_commit:
        return False
    if use_outbox:
        if holding is None or holding.outbox is None:
            raise RuntimeError(
                "outbox=True needs PUSHER_OUTBOX = True on the app (and Flask-SQLAlchemy)."
            )
        if client.recorder is None:
            holding.outbox.write(batch_items(request))
            return True
        # record_events(): recorded at the commit, as the relay would send them.
    if holding is None:
        raise RuntimeError(
            "after_commit=True needs Flask-SQLAlchemy on the app: call db.init_app(app)"
            " before pusher.init_app(app)."
        )
    from .transactions import after_commit as hold_until_commit

    hold_until_commit(holding.db.session(), lambda: send_held(client, request, defer))
    return True


def send_held(client: PusherClient, request: Request, defer: bool) -> None:
    """Send a request held until commit (after the response with ``defer``); log a failure."""
    if defer and delivery.defer(client, request):
        return
    try:
        client.send(request)
    except Exception as e:
        events = ", ".join(f"{i['name']} on {i['channel']}" for i in batch_items(request))
        log.error(
            "Sending Pusher event(s) after the commit failed (%s): %s: %s",
            events,
            type(e).__name__,
            e,
        )
