"""A realtime chat on Flask-Pusher: presence, room messages, "typing...",
direct messages, an encrypted room, notifications and a webhook activity log.

From the repository root::

    flask --app examples.chat run

With no Pusher credentials in the environment it runs a local Pusher server in
its own process (``PUSHER_LOCAL_SERVER``): no account, no network. Give it
``PUSHER_URL`` (or ``PUSHER_APP_ID``, ``PUSHER_KEY``, ``PUSHER_SECRET`` and
``PUSHER_CLUSTER``) and the same code runs on Pusher Channels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from flask_pusher import local

from . import views
from .realtime import pusher

#: A fixed encryption master key (32 bytes, base64) for development only.
#: Set your own in production: ``PUSHER_ENCRYPTION_MASTER_KEY_BASE64=$(openssl rand -base64 32)``.
DEV_MASTER_KEY = "Zmxhc2stcHVzaGVyLWNoYXQtZXhhbXBsZS1kZXYhISE="


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the chat app.

    Settings come from, lowest first: the development defaults below, ``FLASK_*``
    environment variables (``FLASK_SECRET_KEY``), ``PUSHER_*`` environment
    variables (``PUSHER_URL``, as Pusher's add-ons set it), then ``config``.
    """
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY="dev",  # set FLASK_SECRET_KEY in production
        PUSHER_ENCRYPTION_MASTER_KEY_BASE64=DEV_MASTER_KEY,
    )
    app.config.from_prefixed_env()
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("PUSHER_")})
    if config is not None:
        app.config.update(config)
    # No Pusher credentials: run a local Pusher server in this process.
    has_credentials = app.config.get("PUSHER_URL") or app.config.get("PUSHER_APP_ID")
    app.config.setdefault("PUSHER_LOCAL_SERVER", not has_credentials)

    pusher.init_app(app)
    app.register_blueprint(views.bp)

    @app.context_processor
    def debug_console() -> dict[str, str | None]:
        # The local server's debug console, linked from every page.
        return {"console_url": local.console_url(pusher.settings)}

    return app
