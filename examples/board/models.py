"""The board's one model, and who may listen to it."""

from __future__ import annotations

from collections.abc import Iterable

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_pusher import Pusher
from flask_pusher.models import BroadcastsEvents


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
pusher = Pusher()

#: Where every task's events also go, so a page sees tasks it has not seen yet
#: (Laravel's ``broadcastOn`` returning ``[$this, $this->board]``).
BOARD = "private-board"
MAX_TITLE = 200


class Task(BroadcastsEvents, db.Model):  # type: ignore[name-defined,misc]
    """A task. Only ``id``, ``title`` and ``done`` are ever broadcast."""

    __broadcast_fields__ = ("id", "title", "done")

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(MAX_TITLE))
    done: Mapped[bool] = mapped_column(default=False)

    def broadcast_on(self, event: str) -> Iterable[str]:
        # Its own channel, private-App.Models.Task.{id}, and the board's.
        return [str(super().broadcast_on(event)), BOARD]


@pusher.channel(BOARD)
def board_channel() -> bool:
    return True  # an open board; check the user here in a real app


@pusher.channel("private-App.Models.Task.{task_id:int}")
def task_channel(task_id: int) -> bool:
    return db.session.get(Task, task_id) is not None
