"""The relay: sends committed outbox rows to Pusher, in order per channel.

Each cycle (:meth:`Relay.run_once`):

1.  Claims up to ``limit`` due rows, oldest first. On PostgreSQL with
    ``SELECT ... FOR UPDATE SKIP LOCKED``, so that several relays share the
    work; elsewhere (SQLite) only the relay holding the lease row works.
2.  Keeps, for each channel, only the rows that come before any unsent row of
    that channel it does not hold (one locked by another relay, or waiting for
    a retry): a channel's events leave in ``id`` order.
3.  Sends them with ``POST /apps/{app_id}/batch_events``, 10 to a request
    (https://pusher.com/docs/channels/library_auth_reference/rest-api/#post-batch-events);
    ``#server-to-user-`` events go alone through ``POST /events``, as
    ``send_to_user`` sends them.
4.  Records the outcome: sent; refused for good (a 4xx other than 429: the
    batch is resent one event at a time and the refused ones are set aside
    with the reason); or to retry (network error, 5xx, 429) after an
    exponential backoff with jitter, and the cycle stops there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import TYPE_CHECKING

import pusher.errors
from sqlalchemy import bindparam
from sqlalchemy import delete
from sqlalchemy import Engine
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import OperationalError

from ..delivery import MAX_BATCH_EVENTS

if TYPE_CHECKING:
    from flask import Flask

    from ..client import PusherClient
    from . import Outbox

log = logging.getLogger("flask_pusher.outbox")

_Row = Any  # a row of the outbox table (sqlalchemy.Row, typed by column)

#: Rows a PostgreSQL relay locks to send one batch from: more than a batch, so
#: that rows of channels blocked behind another relay's rows can be passed over.
CLAIM_WINDOW = 30

#: The lease row's name in ``flask_pusher_outbox_lease``.
LEASE_NAME = "relay"
_USER_PREFIX = "#server-to-user-"


@dataclasses.dataclass(frozen=True)
class OutboxStatus:
    """What ``flask pusher outbox`` prints and :meth:`Relay.status` returns."""

    #: Committed events not yet sent (retries included), not set aside.
    backlog: int
    #: Age in seconds of the oldest of them; ``0.0`` with no backlog.
    oldest_age: float
    #: Events Pusher refused for good, kept with their ``error``.
    set_aside: int
    #: Sent events kept until the retention time has passed.
    sent_kept: int


@dataclasses.dataclass
class RelayStats:
    """Counts since the relay started."""

    sent: int = 0
    set_aside: int = 0
    retries: int = 0
    #: Sends whose outcome is unknown (a timeout after the request left): a
    #: duplicate is possible when they are retried.
    unknown_outcome: int = 0
    requests: int = 0


class _Transient(Exception):
    def __init__(self, reason: str, unknown: bool) -> None:
        super().__init__(reason)
        self.unknown = unknown


class _Refused(Exception):
    pass


class Relay:
    """Sends the committed events of one app's outbox.

    :param engine: the engine of the outbox table's database.
    :param outbox: the app's :class:`~flask_pusher.outbox.Outbox`.
    :param client: the app's client: events go to its HTTP API.
    :param limit: rows claimed per cycle (default 100).
    :param retry_base: the first retry delay in seconds (default 0.2), doubled
        at each failed attempt.
    :param retry_max: the longest retry delay in seconds (``PUSHER_OUTBOX_RETRY_MAX``).
    :param retention: seconds a sent row is kept before it is deleted
        (``PUSHER_OUTBOX_RETENTION``).
    :param lease: seconds the SQLite lease lasts without renewal (default 30).
    """

    def __init__(
        self,
        engine: Engine,
        outbox: Outbox,
        client: PusherClient,
        *,
        limit: int = 100,
        retry_base: float = 0.2,
        retry_max: float | None = None,
        retention: float | None = None,
        lease: float = 30.0,
    ) -> None:
        self.engine = engine
        self.table = outbox.table
        self.lease_table = outbox.lease_table
        self.client = client
        self.limit = limit
        self.retry_base = retry_base
        self.retry_max = outbox.settings.outbox_retry_max if retry_max is None else retry_max
        self.retention = outbox.settings.outbox_retention if retention is None else retention
        self.lease = lease
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.stats = RelayStats()
        self.skip_locked = engine.dialect.name == "postgresql"
        self._failing = False
        self._db_failing = False
        self._last_purge = 0.0
        self._lease_until = 0.0
        self._claims: dict[int, Any] = {}
        t = self.table
        self._mark = (
            update(t)
            .where(t.c.id.in_(bindparam("ids", expanding=True)))
            .values(sent_at=bindparam("now"))
        )

    # --- one cycle -----------------------------------------------------------------

    def run_once(self) -> int:
        """Send what is due; the number of rows whose state changed (0: nothing to do).

        Each batch's outcome is committed before the next batch is sent, so a
        relay that dies resends at most the batch in flight.
        """
        if self.skip_locked:
            handled = 0
            for _ in range(max(1, -(-self.limit // MAX_BATCH_EVENTS))):
                with self.engine.begin() as conn:  # the row locks last until it is recorded
                    rows = self._claim(conn, min(self.limit, CLAIM_WINDOW))
                    if not rows:
                        break
                    done, go_on = self._deliver(conn, rows, batches=1)
                handled += done
                if not go_on:
                    break
            return handled
        if not self._take_lease():
            return 0
        with self.engine.begin() as conn:
            rows = self._claim(conn, self.limit)
        if not rows:
            return 0
        with self.engine.connect() as conn:  # one relay at a time: no row locks needed

            def commit() -> bool:
                conn.commit()
                return self._take_lease()  # renewed between batches; lost: stop here

            done, _ = self._deliver(conn, rows, commit=commit)
            return done

    def _claim(self, conn: Connection, limit: int) -> list[_Row]:
        """The oldest ``limit`` due rows (locked on PostgreSQL), less those an
        unsent row of their channel that this claim does not hold comes before
        (locked by another relay, or waiting for a retry): one statement."""
        statement = self._claim_statement(limit)
        return list(conn.execute(statement, {"now": time.time()}))

    def _claim_statement(self, limit: int) -> Any:
        cached = self._claims.get(limit)
        if cached is not None:
            return cached
        t = self.table
        unsent = t.c.sent_at.is_(None) & t.c.failed_at.is_(None)
        claim = (
            select(t.c.id, t.c.channel, t.c.name, t.c.data, t.c.socket_id, t.c.attempts)
            .where(unsent, t.c.next_attempt_at <= bindparam("now"))
            .order_by(t.c.id)
            .limit(limit)
        )
        if self.skip_locked:
            claim = claim.with_for_update(skip_locked=True)
        claimed = claim.cte("claimed")
        earlier = t.alias("earlier")
        blocked = (
            select(earlier.c.id)
            .where(earlier.c.channel == claimed.c.channel, earlier.c.id < claimed.c.id)
            .where(earlier.c.sent_at.is_(None), earlier.c.failed_at.is_(None))
            .where(earlier.c.id.not_in(select(claimed.c.id).scalar_subquery()))
            # Bounds the scan to the backlog below the claim (the index on id):
            .where(earlier.c.id < select(func.max(claimed.c.id)).scalar_subquery())
            .exists()
        )
        statement = select(claimed).where(~blocked).order_by(claimed.c.id)
        self._claims[limit] = statement
        return statement

    def _deliver(
        self,
        conn: Connection,
        rows: Sequence[_Row],
        *,
        batches: int | None = None,
        commit: Callable[[], bool] | None = None,
    ) -> tuple[int, bool]:
        """Send ``rows`` batch by batch (at most ``batches``), ``commit()`` after each;
        a false answer from ``commit()`` (the SQLite lease lost) stops the cycle.

        :returns: the rows handled, and ``False`` if a failure stopped the cycle.
        """
        handled = 0
        for count, batch in enumerate(_batches(rows), 1):
            try:
                self._send(batch)
            except _Transient as e:
                self._retry(conn, batch, str(e), e.unknown)
                if commit is not None:
                    commit()
                return handled + len(batch), False
            except _Refused:
                done, ok = self._one_by_one(conn, batch)
                handled += done
                if not ok:
                    if commit is not None:
                        commit()
                    return handled, False
            else:
                self._mark_sent(conn, batch)
                handled += len(batch)
            if commit is not None and not commit():
                return handled, False
            if self._failing:
                self._failing = False
                log.warning("Pusher accepts events again; the outbox is being sent.")
            if batches is not None and count >= batches:
                return handled, count < len(rows)
        return handled, True

    def _one_by_one(self, conn: Connection, batch: Sequence[_Row]) -> tuple[int, bool]:
        """Resend a refused batch one event at a time: set aside the refused ones.

        :returns: the rows handled, and ``False`` if a failure stopped it.
        """
        for index, row in enumerate(batch):
            try:
                self._send([row])
            except _Transient as e:
                self._retry(conn, batch[index:], str(e), e.unknown)
                return len(batch), False
            except _Refused as e:
                self._set_aside(conn, row, str(e))
                continue
            self._mark_sent(conn, [row])
        return len(batch), True

    def _send(self, batch: Sequence[_Row]) -> None:
        items = [_item(row) for row in batch]
        try:
            if len(items) == 1 and items[0]["channel"].startswith(_USER_PREFIX):
                item = items[0]
                request = self.client._pusher_client.trigger.make_request(
                    [item["channel"]], item["name"], item["data"], item.get("socket_id")
                )
            else:
                request = self.client.trigger_batch_request(items, already_encoded=True)
            self.stats.requests += 1
            self.client.send(request)
        except pusher.errors.PusherBadStatus as e:
            status = _status(e)
            if status == 429 or status >= 500:
                raise _Transient(f"HTTP {status}: {_short(e)}", unknown=status >= 500) from e
            raise _Refused(f"HTTP {status}: {_short(e)}") from e
        except (pusher.errors.PusherBadRequest, pusher.errors.PusherBadAuth) as e:
            raise _Refused(f"{type(e).__name__}: {_short(e)}") from e
        except pusher.errors.PusherForbidden as e:
            # 403: app disabled or over quota: it may come back; retry, never drop.
            raise _Transient(f"HTTP 403: {_short(e)}", unknown=False) from e
        except ValueError as e:  # the official client refused the item itself
            raise _Refused(f"ValueError: {_short(e)}") from e
        except Exception as e:  # network: the backend's own errors
            unknown = not _refused_connection(e)
            raise _Transient(f"{type(e).__name__}: {_short(e)}", unknown=unknown) from e

    # --- recording outcomes ---------------------------------------------------------

    def _mark_sent(self, conn: Connection, batch: Sequence[_Row]) -> None:
        ids = [row.id for row in batch]
        conn.execute(self._mark, {"ids": ids, "now": time.time()})
        self.stats.sent += len(ids)

    def _retry(self, conn: Connection, batch: Sequence[_Row], reason: str, unknown: bool) -> None:
        t = self.table
        attempts = max(row.attempts for row in batch) + 1
        delay = min(self.retry_max, self.retry_base * 2 ** min(attempts - 1, 30))
        delay = random.uniform(delay / 2, delay)  # "equal jitter"
        ids = [row.id for row in batch]
        conn.execute(
            update(t)
            .where(t.c.id.in_(ids))
            .values(attempts=t.c.attempts + 1, next_attempt_at=time.time() + delay, error=reason)
        )
        self.stats.retries += len(ids)
        if unknown:
            self.stats.unknown_outcome += len(ids)
        if not self._failing:
            self._failing = True
            log.warning("Sending outbox events failed (%s); retrying with backoff.", reason)

    def _set_aside(self, conn: Connection, row: _Row, reason: str) -> None:
        t = self.table
        conn.execute(
            update(t).where(t.c.id == row.id).values(failed_at=time.time(), error=reason[:1000])
        )
        self.stats.set_aside += 1
        log.error(
            "Pusher refused outbox event %d (%s on %s): %s", row.id, row.name, row.channel, reason
        )

    # --- housekeeping ---------------------------------------------------------------

    def purge(self) -> int:
        """Delete sent rows older than the retention time; the number deleted."""
        t = self.table
        with self.engine.begin() as conn:
            result = conn.execute(delete(t).where(t.c.sent_at < time.time() - self.retention))
        self._last_purge = time.monotonic()
        return int(result.rowcount or 0)

    def _log_status(self) -> None:
        status = self.status()
        if status.backlog or status.set_aside:
            log.info(
                "Outbox: %d event(s) to send, the oldest %.1f s old; %d set aside.",
                status.backlog,
                status.oldest_age,
                status.set_aside,
            )

    def status(self) -> OutboxStatus:
        """The backlog, the age of its oldest event, and the events set aside."""
        t = self.table
        pending = t.c.sent_at.is_(None) & t.c.failed_at.is_(None)
        with self.engine.connect() as conn:
            backlog, oldest = conn.execute(
                select(func.count(), func.min(t.c.created_at)).where(pending)
            ).one()
            aside = conn.execute(select(func.count()).where(t.c.failed_at.is_not(None))).scalar()
            kept = conn.execute(select(func.count()).where(t.c.sent_at.is_not(None))).scalar()
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        return OutboxStatus(int(backlog), age, int(aside or 0), int(kept or 0))

    def _take_lease(self) -> bool:
        t = self.lease_table
        now = time.time()
        if self._lease_until - now > self.lease / 2:
            return True  # held, and far from expiring: no write (SQLite locks the file)
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t)
                .where(t.c.name == LEASE_NAME)
                .where((t.c.holder == self.name) | (t.c.expires_at < now))
                .values(holder=self.name, expires_at=now + self.lease)
            ).rowcount
            if taken:
                self._lease_until = now + self.lease
                return True
            exists = conn.execute(select(t.c.name).where(t.c.name == LEASE_NAME)).first()
            if exists is not None:
                return False
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(t).values(name=LEASE_NAME, holder=self.name, expires_at=now + self.lease)
                )
        except IntegrityError:
            return False
        self._lease_until = now + self.lease
        return True

    def release(self) -> None:
        """Give up the SQLite lease at a clean stop, so another relay takes over at once."""
        if self.skip_locked:
            return
        t = self.lease_table
        self._lease_until = 0.0
        with self.engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.name == LEASE_NAME, t.c.holder == self.name)
                .values(expires_at=0.0)
            )

    # --- the loop -------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        wake: threading.Event | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        """Run cycles until ``stop`` is set.

        Between cycles with nothing to send it waits ``poll_interval`` seconds,
        or until ``wake`` is set (the in-process relay is woken after each commit
        that wrote events). Database errors are logged and retried after the
        interval. Sent rows are purged every minute (at most).
        """
        wake = wake or threading.Event()
        while not stop.is_set():
            wake.clear()
            try:
                handled = self.run_once()
                if time.monotonic() - self._last_purge > min(60.0, self.retention):
                    self.purge()
                    self._log_status()
            except OperationalError as e:
                if not self._db_failing:  # once per outage, not once per poll
                    log.warning(
                        "The outbox relay cannot use its database (retrying every %g s;"
                        " is the outbox table created? db.create_all() or the migration"
                        " in the docs creates it): %s",
                        max(poll_interval, 1.0),
                        _short(e),
                    )
                self._db_failing = True
                handled = 0
            else:
                if self._db_failing:
                    log.warning("The outbox relay uses its database again.")
                self._db_failing = False
            if handled:
                continue
            idle = max(poll_interval, 1.0) if self._db_failing else poll_interval
            deadline = time.monotonic() + idle
            while not stop.is_set() and not wake.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wake.wait(min(left, 0.5))
        with contextlib.suppress(OperationalError):
            self.release()


class RelayThread(threading.Thread):
    """The in-process relay (``PUSHER_OUTBOX_RELAY_THREAD``): a daemon thread."""

    def __init__(self, app: Flask, outbox: Outbox) -> None:
        super().__init__(name="flask-pusher-relay", daemon=True)
        with app.app_context():
            self.relay = outbox.make_relay()
        self.outbox = outbox
        self.stop_event = threading.Event()

    def run(self) -> None:
        self.relay.run(self.stop_event, self.outbox.wake, self.outbox.settings.outbox_poll_interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the cycle in progress."""
        self.stop_event.set()
        self.outbox.wake.set()
        self.join(timeout)


def _batches(rows: Sequence[_Row]) -> list[list[_Row]]:
    batches: list[list[_Row]] = []
    current: list[_Row] = []
    for row in rows:
        if row.channel.startswith(_USER_PREFIX):
            if current:
                batches.append(current)
                current = []
            batches.append([row])
            continue
        current.append(row)
        if len(current) == MAX_BATCH_EVENTS:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches


def _item(row: _Row) -> dict[str, Any]:
    item = {"channel": row.channel, "name": row.name, "data": row.data}
    if row.socket_id:
        item["socket_id"] = row.socket_id
    return item


def _status(error: Exception) -> int:
    match = re.match(r"\s*(\d{3})", str(error))
    return int(match.group(1)) if match else 500


def _short(error: BaseException) -> str:
    text = str(error).replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def _refused_connection(error: BaseException) -> bool:
    """Whether the request surely never reached the server (connection refused)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        if "Connection refused" in str(current) or "NewConnectionError" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False
