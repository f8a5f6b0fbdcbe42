"""The ``flask pusher`` command group.

- ``flask pusher serve``: run the local Pusher Channels server for the app's own
  ``PUSHER_APP_ID``, ``PUSHER_KEY`` and ``PUSHER_SECRET`` (extra ``flask-pusher[server]``).
- ``flask pusher trigger CHANNEL EVENT [DATA]``: trigger an event through the app's client.
- ``flask pusher relay`` and ``flask pusher outbox``: the outbox's relay and its
  status (:mod:`flask_pusher.outbox.cli`, extra ``flask-pusher[sqlalchemy]``).
- ``flask pusher listen CHANNEL...``: print channels' events as they arrive
  (:mod:`flask_pusher.listen`, extra ``flask-pusher[client]``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from click.core import ParameterSource
from flask import current_app
from flask.cli import AppGroup

from .listen import listen
from .local import server_settings
from .server.cli import OpsOptions
from .server.cli import serve as run_server
from .server.cli import server_options
from .server.config import AppConfig
from .server.config import WebhookConfig

pusher_cli = AppGroup("pusher", help="Pusher Channels: the local server and the client.")
pusher_cli.add_command(listen)


def _extension() -> Any:
    ext = current_app.extensions.get("pusher")
    if ext is None:
        raise click.UsageError(
            "This app has no Pusher extension: call Pusher(app) or pusher.init_app(app)."
        )
    return ext


@pusher_cli.command("serve")
@server_options
def serve(host: str, port: int, webhooks: tuple[str, ...], debug: bool, ops: OpsOptions) -> None:
    """Run a local Pusher Channels server for this app's credentials.

    The same server as ``python -m flask_pusher.server``, with the app's
    PUSHER_APP_ID, PUSHER_KEY and PUSHER_SECRET. Point the app at it with
    PUSHER_HOST=127.0.0.1, PUSHER_PORT=6001 and PUSHER_SSL=false. Without
    --redis, --redis-prefix, --console-allow-host and --loop, the app's
    PUSHER_SERVER_REDIS_URL, PUSHER_SERVER_REDIS_PREFIX,
    PUSHER_SERVER_CONSOLE_ALLOW_HOSTS and PUSHER_SERVER_LOOP are used. Stops
    cleanly on Ctrl-C.
    """
    settings = _extension().settings
    ctx = click.get_current_context()
    defaults = (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    # An option the command line leaves at its default takes the app's PUSHER_SERVER_* key.
    configured = {
        name: value
        for name, value in server_settings(settings).items()
        if ctx.get_parameter_source(name) in defaults
    }
    ops = dataclasses.replace(ops, **configured)
    hooks = tuple(WebhookConfig(url) for url in webhooks)
    app_config = AppConfig(
        settings.app_id, settings.key, settings.secret, webhooks=hooks, **settings.server_app_limits
    )
    run_server([app_config], host, port, debug, ops)


@pusher_cli.command("trigger")
@click.argument("channel")
@click.argument("event")
@click.argument("data", required=False, default="{}")
def trigger(channel: str, event: str, data: str) -> None:
    """Trigger EVENT on CHANNEL with DATA (JSON, or a plain string)."""
    try:
        payload: Any = json.loads(data)
    except ValueError:
        payload = data
    result = _extension().trigger(channel, event, payload)
    click.echo(json.dumps(result))


try:  # the outbox's commands need SQLAlchemy (extra "sqlalchemy")
    from .outbox.cli import relay as _relay
    from .outbox.cli import status as _outbox_status
except ImportError:  # pragma: no cover - without the extra
    pass
else:
    pusher_cli.add_command(_relay)
    pusher_cli.add_command(_outbox_status)
