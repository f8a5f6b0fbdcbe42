"""A shared task board on Flask-SQLAlchemy and SQLite whose tasks broadcast
themselves: open it in two browsers and each sees the other's changes.

From the repository root::

    flask --app examples.board run

Each task is a :class:`~flask_pusher.models.BroadcastsEvents` model: creating,
changing or deleting one sends ``TaskCreated``, ``TaskUpdated`` or
``TaskDeleted`` with ``{"model": {"id", "title", "done"}}`` through the
transactional outbox (``PUSHER_OUTBOX``), in the transaction that saves it; a
relay thread in the app (``PUSHER_OUTBOX_RELAY_THREAD``) sends it right after
the commit. With no Pusher credentials in the environment it runs a local
Pusher server in its own process; give it ``PUSHER_URL`` to use Pusher Channels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from flask_pusher import local

from . import views
from .models import db
from .models import pusher


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the board app.

    Settings come from, lowest first: the defaults below, ``FLASK_*`` and
    ``PUSHER_*`` environment variables, then ``config``. The database is
    ``board.db`` in the app's instance folder unless ``SQLALCHEMY_DATABASE_URI``
    says otherwise.
    """
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY="dev",  # set FLASK_SECRET_KEY in production
        SQLALCHEMY_DATABASE_URI="sqlite:///board.db",
        PUSHER_OUTBOX=True,
        PUSHER_OUTBOX_RELAY_THREAD=True,
    )
    app.config.from_prefixed_env()
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("PUSHER_")})
    if config is not None:
        app.config.update(config)
    has_credentials = app.config.get("PUSHER_URL") or app.config.get("PUSHER_APP_ID")
    app.config.setdefault("PUSHER_LOCAL_SERVER", not has_credentials)

    db.init_app(app)  # before pusher.init_app: the outbox goes into db.metadata
    pusher.init_app(app)
    app.register_blueprint(views.bp)
    with app.app_context():
        db.create_all()  # the tasks, and flask_pusher_outbox

    @app.context_processor
    def debug_console() -> dict[str, str | None]:
        return {"console_url": local.console_url(pusher.settings)}

    return app
