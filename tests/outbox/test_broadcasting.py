"""Event classes (Laravel's ShouldBroadcast) and models that broadcast themselves
(Laravel's BroadcastsEvents), against the real local server (reference §4.2, §5.8)."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import delete
from sqlalchemy import update
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_pusher import BroadcastEvent
from flask_pusher import Pusher
from flask_pusher.models import BroadcastsEvents
from flask_pusher.server import LocalServer

from ..listener import Listener
from .conftest import relay_for


@dataclasses.dataclass
class OrderShipped(BroadcastEvent):
    order_id: int
    status: str
    quiet: bool = False

    def broadcast_on(self) -> list[str]:
        return [f"orders.{self.order_id}", "orders"]

    def broadcast_when(self) -> bool:
        return not self.quiet


def post_app(uri: str, pusher_config: dict[str, Any], **config: Any) -> tuple[Flask, Any, Any]:
    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class Post(BroadcastsEvents, db.Model):  # type: ignore[name-defined,misc]
        __broadcast_fields__ = ("id", "title")
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str]
        secret: Mapped[str] = mapped_column(default="hidden")

    app = Flask("posts")
    app.config.update({**pusher_config, **config}, SQLALCHEMY_DATABASE_URI=uri)
    db.init_app(app)
    Pusher(app)
    with app.app_context():
        db.create_all()
    return app, db, Post


def test_an_event_class_goes_after_the_commit(
    sqlite_uri: str, pusher_config: dict[str, Any], pusher_server: LocalServer
) -> None:
    app, db, _ = post_app(sqlite_uri, pusher_config)
    pusher: Pusher = app.extensions["pusher"]
    with Listener(pusher_server, ["orders", "orders.7"]) as listener, app.app_context():
        assert pusher.broadcast(OrderShipped(7, "shipped"))
        assert not pusher.broadcast(OrderShipped(7, "quiet", quiet=True))
        assert pusher.broadcast(OrderShipped(7, "now"), now=True)
        assert listener.take(2) == [
            ("orders.7", "OrderShipped", {"order_id": 7, "status": "now", "quiet": False}),
            ("orders", "OrderShipped", {"order_id": 7, "status": "now", "quiet": False}),
        ]
        db.session.commit()
        got = listener.take(2)
    assert {c for c, _, _ in got} == {"orders", "orders.7"}
    assert all(d["status"] == "shipped" for _, _, d in got)


def test_models_broadcast_created_updated_deleted_after_commit(
    sqlite_uri: str, pusher_config: dict[str, Any], pusher_server: LocalServer
) -> None:
    app, db, Post = post_app(sqlite_uri, pusher_config)
    channel = "private-App.Models.Post.1"
    with Listener(pusher_server, [channel]) as listener, app.app_context():
        post = Post(title="Hello")
        db.session.add(post)
        db.session.commit()
        assert listener.take(1) == [
            (channel, "PostCreated", {"model": {"id": 1, "title": "Hello"}})
        ]
        post.title = "Hello again"
        db.session.flush()
        db.session.rollback()  # a rolled-back change sends nothing
        post = db.session.get(Post, 1)
        post.title = "Hi"
        db.session.commit()
        assert post.title == "Hi"  # loaded again after the commit
        post.title = "Hi"  # no change: no event
        db.session.commit()
        db.session.delete(post)
        db.session.commit()
        assert listener.take(2) == [
            (channel, "PostUpdated", {"model": {"id": 1, "title": "Hi"}}),
            (channel, "PostDeleted", {"model": {"id": 1, "title": "Hi"}}),
        ]
        # Bulk statements bypass the unit of work: nothing, as in Laravel.
        db.session.add(Post(id=1, title="back"))
        db.session.commit()
        assert listener.take(1)[0][1] == "PostCreated"
        db.session.execute(update(Post).values(title="bulk"))
        db.session.execute(delete(Post))
        db.session.commit()
        pusher: Pusher = app.extensions["pusher"]
        pusher.trigger(channel, "marker", {})
        assert listener.take(1) == [(channel, "marker", {})]


def test_models_through_the_outbox(
    sqlite_uri: str, pusher_config: dict[str, Any], pusher_server: LocalServer
) -> None:
    app, db, Post = post_app(sqlite_uri, pusher_config, PUSHER_OUTBOX=True)
    relay = relay_for(app)
    with Listener(pusher_server, ["private-App.Models.Post.5"]) as listener:
        with app.app_context():
            db.session.add(Post(id=5, title="in the outbox"))
            db.session.commit()
        assert relay.run_once() == 1
        assert listener.take(1) == [
            (
                "private-App.Models.Post.5",
                "PostCreated",
                {"model": {"id": 5, "title": "in the outbox"}},
            )
        ]


def test_the_payload_is_only_the_declared_fields(
    sqlite_uri: str, pusher_config: dict[str, Any]
) -> None:
    from flask_pusher.models import ModelEvent

    app, db, Post = post_app(sqlite_uri, pusher_config)
    with app.app_context():
        post = Post(id=3, title="t", secret="s")
        db.session.add(post)
        db.session.flush()
        event = ModelEvent(post, "created")
        assert event.broadcast_with() == {"model": {"id": 3, "title": "t"}}
        assert event.broadcast_on() == "private-App.Models.Post.3"
        db.session.rollback()


class Typing(BroadcastEvent):
    to_others = True

    def __init__(self, who: str) -> None:
        self.who = who

    def broadcast_on(self) -> str:
        return "room"


def test_an_event_class_to_others_leaves_out_the_sender(
    sqlite_uri: str, pusher_config: dict[str, Any], pusher_server: LocalServer
) -> None:
    """to_others (Laravel's toOthers()): the X-Socket-ID connection is left out
    (reference §4.2 socket_id), after the commit as any event."""
    app, db, _ = post_app(sqlite_uri, pusher_config)
    pusher: Pusher = app.extensions["pusher"]

    @app.post("/typing")
    def typing() -> dict[str, Any]:
        pusher.broadcast(Typing("ann"))
        db.session.commit()
        return {}

    with Listener(pusher_server, ["room"]) as sender, Listener(pusher_server, ["room"]) as other:
        response = app.test_client().post("/typing", headers={"X-Socket-ID": sender.socket_id})
        assert response.status_code == 200
        assert other.take(1) == [("room", "Typing", {"who": "ann"})]
        with app.app_context():
            pusher.trigger("room", "marker", {}, after_commit=False)
        assert sender.take(1) == [("room", "marker", {})]  # nothing came before it
