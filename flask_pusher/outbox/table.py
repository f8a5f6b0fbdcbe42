"""The outbox table, in the app's own metadata.

One row per event and channel, as a ``batch_events`` item
(https://pusher.com/docs/channels/library_auth_reference/rest-api/#post-batch-events):
``channel``, ``name``, ``data`` (the encoded string), ``socket_id``. The relay
fills in the rest.
"""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlalchemy import Column
from sqlalchemy import Float
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import MetaData
from sqlalchemy import String
from sqlalchemy import Table
from sqlalchemy import Text

#: The table's name, in the app's metadata.
TABLE_NAME = "flask_pusher_outbox"
#: The one-row table of the relay lease, used where rows cannot be locked (SQLite).
LEASE_TABLE_NAME = "flask_pusher_outbox_lease"


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table of ``metadata``, defined there the first time.

    Columns (times are Unix seconds, as floats):

    ``id``
        the order of the events: the relay sends each channel's events by ``id``.
    ``channel``, ``name``, ``data``, ``socket_id``
        the ``batch_events`` item; ``data`` is already encoded.
    ``created_at``
        when the event was written (the caller's clock).
    ``attempts``, ``next_attempt_at``
        failed sends so far, and when to try again.
    ``sent_at``
        when Pusher accepted it; the row is deleted a retention time later.
    ``failed_at``, ``error``
        set aside: Pusher refused it for good (a 4xx other than 429), and why.
    """
    existing = metadata.tables.get(TABLE_NAME)
    if existing is not None:
        return existing
    table = Table(
        TABLE_NAME,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("channel", String(200), nullable=False),
        Column("name", String(200), nullable=False),
        Column("data", Text, nullable=False),
        Column("socket_id", String(50), nullable=True),
        Column("created_at", Float, nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", Float, nullable=False, default=0.0),
        Column("sent_at", Float, nullable=True),
        Column("failed_at", Float, nullable=True),
        Column("error", Text, nullable=True),
    )
    # A partial index: it holds the backlog only, however many sent rows are kept.
    # The relay's queries read the backlog by id (the channel check, too: the rows
    # it reads are at most those up to its claim's newest).
    unsent = table.c.sent_at.is_(None) & table.c.failed_at.is_(None)
    Index(f"ix_{TABLE_NAME}_unsent", table.c.id, postgresql_where=unsent, sqlite_where=unsent)
    Index(f"ix_{TABLE_NAME}_sent_at", table.c.sent_at)  # the purge
    return table


def lease_table(metadata: MetaData) -> Table:
    """The relay lease table of ``metadata``: one row, the relay that works and until when."""
    existing = metadata.tables.get(LEASE_TABLE_NAME)
    if existing is not None:
        return existing
    return Table(
        LEASE_TABLE_NAME,
        metadata,
        Column("name", String(50), primary_key=True),
        Column("holder", String(100), nullable=False),
        Column("expires_at", Float, nullable=False),
    )
