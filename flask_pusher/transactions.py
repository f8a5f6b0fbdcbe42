"""Hold work until a SQLAlchemy session's transaction commits.

:func:`after_commit` keeps a callback with the transaction that is in progress on
a :class:`sqlalchemy.orm.Session` and calls it once the outermost transaction has
committed; a rollback, or a session closed without a commit, drops it. It rests
on SQLAlchemy's session events (``after_commit``, ``after_transaction_end``;
https://docs.sqlalchemy.org/en/20/orm/events.html#sqlalchemy.orm.SessionEvents):

-   ``after_commit`` fires for the outermost transaction and for each savepoint
    released by ``begin_nested()``; it marks that transaction as committed.
-   ``after_transaction_end`` fires when any transaction ends. The callbacks of a
    committed savepoint move to the enclosing transaction (so a later rollback
    of the outer transaction still drops them); those of a rolled-back savepoint
    are dropped; those of the outermost transaction run if it committed.

Callbacks run in the order they were held. A callback that raises is logged and
does not stop the others: the data is committed either way.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm import SessionTransaction

log = logging.getLogger("flask_pusher")

Callback = Callable[[], Any]

_PENDING = "flask_pusher.pending"
_COMMITTED = "flask_pusher.committed"


def after_commit(session: Session, callback: Callback, *, key: object = None) -> None:
    """Call ``callback()`` once the transaction in progress on ``session`` commits.

    With no transaction in progress, one begins (as the session's next query
    would begin it): the callback then waits for the session's next commit, and
    is dropped if the session rolls back or is closed first (Flask-SQLAlchemy
    closes ``db.session`` at the end of each request and app context).

    :param session: a :class:`sqlalchemy.orm.Session` (for Flask-SQLAlchemy, the
        current ``db.session()``).
    :param callback: called with no arguments after the commit, in the thread
        that committed.
    :param key: when given, a second callback with the same ``key`` in the same
        transaction is not held (for "wake the relay once per transaction").
    """
    _listen(session)
    transaction = _innermost(session)
    if transaction is None:
        transaction = session.begin()
    pending: dict[SessionTransaction, list[tuple[object, Callback]]]
    pending = session.info.setdefault(_PENDING, {})
    held = pending.setdefault(transaction, [])
    if key is not None and any(k == key for k, _ in held):
        return
    held.append((key, callback))


def pending_count(session: Session) -> int:
    """How many callbacks ``session`` holds, over all its open transactions."""
    pending = session.info.get(_PENDING, {})
    return sum(len(held) for held in pending.values())


def _innermost(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


_listening: weakref.WeakSet[Session] = weakref.WeakSet()


def _listen(session: Session) -> None:
    if session in _listening:
        return
    event.listen(session, "after_commit", _committed)
    event.listen(session, "after_transaction_end", _ended)
    _listening.add(session)


def _committed(session: Session) -> None:
    transaction = _innermost(session)
    if transaction is not None and transaction in session.info.get(_PENDING, {}):
        session.info.setdefault(_COMMITTED, weakref.WeakSet()).add(transaction)


def _ended(session: Session, transaction: SessionTransaction) -> None:
    pending: dict[SessionTransaction, list[tuple[object, Callback]]] | None
    pending = session.info.get(_PENDING)
    if not pending or transaction not in pending:
        return
    held = pending.pop(transaction)
    committed = session.info.get(_COMMITTED)
    if committed is None or transaction not in committed:
        if held:
            log.debug("Dropped %d held Pusher event(s): the transaction rolled back.", len(held))
        return
    committed.discard(transaction)
    parent = transaction.parent
    if parent is not None:
        into = pending.setdefault(parent, [])
        for key, callback in held:
            if key is None or all(k != key for k, _ in into):
                into.append((key, callback))
        return
    for _, callback in held:
        try:
            callback()
        except Exception:
            log.exception("A Pusher after-commit callback failed (the data is committed).")
