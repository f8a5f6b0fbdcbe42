"""Hold work until a SQLAlchemy session's transaction commits.

:func:`after_commit` keeps a callback with the transaction that is in progress on
a :class:`sqlalchemy.orm.Session` and calls it once the outermost transaction has
committed; a rollback, or a session closed without a commit, drops it. It rests
on SQLAlchemy's session events (``before_commit``, ``after_commit``,
``after_transaction_end``;
https://docs.sqlalchemy.org/en/20/orm/events.html#sqlalchemy.orm.SessionEvents),
listened to on the :class:`~sqlalchemy.orm.Session` class once this module is
imported, so every session of the process is seen:

-   ``after_commit`` fires for the outermost transaction and for each savepoint
    released by ``begin_nested()``; it marks that transaction as committed.
-   ``after_transaction_end`` fires when any transaction ends. The callbacks of a
    committed savepoint move to the enclosing transaction (so a later rollback
    of the outer transaction still drops them); those of a rolled-back savepoint
    are dropped; those of the outermost transaction run if it committed.

Callbacks run in the order they were held. A callback that raises is logged and
does not stop the others: the data is committed either way.

:func:`hold_rows` keeps rows to insert with the same rules, and inserts them
inside the outermost transaction, in SQLAlchemy's ``before_commit`` event after
a flush, all in call order, in one ``executemany`` per table: the outbox's rows.
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
_ROWS = "flask_pusher.rows"

#: Set once a :class:`~flask_pusher.models.BroadcastsEvents` model exists: then
#: ``before_commit`` flushes first, so that rows held by the commit's own flush
#: are inserted too (the commit would flush right after anyway).
flush_before_commit = False

#: Inserts held rows: called with the rows, inside the transaction.
Inserter = Callable[[Session, list[dict[str, Any]]], Any]


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
    transaction = _innermost(session)
    if transaction is None:
        transaction = session.begin()
    pending: dict[SessionTransaction, list[tuple[object, Callback]]]
    pending = session.info.setdefault(_PENDING, {})
    held = pending.setdefault(transaction, [])
    if key is not None and any(k == key for k, _ in held):
        return
    held.append((key, callback))


def hold_rows(session: Session, key: object, insert: Inserter, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` just before the transaction in progress commits.

    Rows of a rolled-back savepoint, a rollback or a session closed without a
    commit are never inserted. At the commit of the outermost transaction the
    session is flushed, then ``insert(session, rows)`` is called once per
    ``key`` with every row held, in call order; an error there fails the commit.

    :param key: what the rows are for (one outbox table).
    :param insert: inserts them, such as ``session.execute(insert(table), rows)``.
    """
    transaction = _innermost(session)
    if transaction is None:
        transaction = session.begin()
    held: dict[object, tuple[Inserter, list[tuple[SessionTransaction, dict[str, Any]]]]]
    held = session.info.setdefault(_ROWS, {})
    entry = held.setdefault(key, (insert, []))
    entry[1].extend((transaction, row) for row in rows)


def pending_count(session: Session) -> int:
    """How many callbacks ``session`` holds, over all its open transactions."""
    pending = session.info.get(_PENDING, {})
    return sum(len(held) for held in pending.values())


def _innermost(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    transaction = _innermost(session)
    if transaction is None or transaction.parent is not None:
        return  # a savepoint: its rows pass to the enclosing transaction at its end
    if flush_before_commit and (session.new or session.deleted or session.dirty):
        session.flush()  # the commit's flush, now: model broadcasting holds rows in it
    held = session.info.pop(_ROWS, None)
    if not held:
        return
    for insert, rows in held.values():
        if rows:
            insert(session, [row for _, row in rows])


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    transaction = _innermost(session)
    if transaction is None:
        return
    if transaction in session.info.get(_PENDING, {}) or session.info.get(_ROWS):
        session.info.setdefault(_COMMITTED, weakref.WeakSet()).add(transaction)


def _end_rows(session: Session, transaction: SessionTransaction, committed: bool) -> None:
    held = session.info.get(_ROWS)
    if not held:
        return
    parent = transaction.parent if committed else None
    for key, (_insert, rows) in list(held.items()):
        if parent is not None:  # a released savepoint: its rows are the parent's now
            rows[:] = [(parent if t is transaction else t, row) for t, row in rows]
        else:  # rolled back, or the outermost transaction ended: drop what is left
            rows[:] = [(t, row) for t, row in rows if t is not transaction]
            if transaction.parent is None:
                rows.clear()
        if not rows:
            del held[key]


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    committed_set = session.info.get(_COMMITTED)
    _end_rows(session, transaction, committed_set is not None and transaction in committed_set)
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
