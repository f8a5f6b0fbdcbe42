"""``flask pusher listen``: print the events of channels as they arrive.

It connects with :class:`~flask_pusher.channels.ChannelsClient` (extra
``client``) to whatever Pusher the app is configured for: the local server
(``PUSHER_LOCAL_SERVER``, on ``PUSHER_LOCAL_SERVER_PORT``), a
Pusher-compatible server (``PUSHER_HOST``, ``PUSHER_PORT``, ``PUSHER_SSL``) or
Pusher Channels (``ws-CLUSTER.pusher.com``). It is the app's own server side,
so it authorizes private, encrypted and presence channels itself with the
app's secret (https://pusher.com/docs/channels/server_api/authorizing-users/).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask import Flask
from flask.cli import with_appcontext

from . import names

if TYPE_CHECKING:
    from .channels import ChannelsClient
    from .channels import Event
    from .settings import PusherSettings

#: The presence member ``flask pusher listen`` joins as without ``--user-id``.
DEFAULT_USER_ID = "flask-pusher-listen"


def ws_target(settings: PusherSettings) -> dict[str, Any]:
    """``ChannelsClient`` keyword arguments for the Pusher the app is configured for."""
    if settings.local_server:
        return {"host": "127.0.0.1", "port": settings.local_server_port, "use_tls": False}
    if settings.host is not None:
        return {"host": settings.host, "port": settings.port, "use_tls": settings.ssl}
    return {"cluster": settings.cluster or "mt1", "use_tls": True}


def _line(event: Event, as_json: bool) -> str:
    data = event.data
    if hasattr(data, "id") and hasattr(data, "info"):  # a presence Member
        data = {"user_id": data.id, "user_info": data.info}
    if as_json:
        record = {"channel": event.channel, "event": event.name, "data": data}
        if event.user_id is not None:
            record["user_id"] = event.user_id
        return json.dumps(record, ensure_ascii=False)
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"{event.channel} {event.name} {text}"


_QUIET = ("pusher:subscription_succeeded", "pusher:subscription_count", "pusher:subscription_error")


async def _listen(
    app: Flask, channels: tuple[str, ...], events: tuple[str, ...], as_json: bool, user_id: str
) -> int:
    from .channels import AuthError
    from .channels import AuthOptions
    from .channels import AuthRequest
    from .channels import ChannelsClient
    from .channels import ConnectionRefused
    from .channels import StateChange
    from .channels import SubscriptionError

    with app.app_context():
        ext = current_app.extensions["pusher"]
        settings = ext.settings

    def authorize(request: AuthRequest) -> dict[str, Any]:
        assert request.channel_name is not None
        data = {"user_id": user_id} if names.is_presence(request.channel_name) else None
        with app.app_context():
            try:
                result = ext.client.authenticate(request.channel_name, request.socket_id, data)
            except ValueError as exc:
                raise AuthError(request.channel_name, "AuthError", str(exc), None) from exc
        return dict(result)

    client: ChannelsClient = ChannelsClient(
        settings.key, channel_authorization=AuthOptions(handler=authorize), **ws_target(settings)
    )

    def show(event: Event) -> None:
        if event.name in _QUIET or (events and event.name not in events):
            return
        click.echo(_line(event, as_json))
        sys.stdout.flush()

    def state(change: StateChange) -> None:
        click.echo(f"[{change.current}]", err=True)

    client.connection.bind("state_change", state)
    client.connection.bind("error", lambda error: click.echo(f"[error: {error}]", err=True))
    refused = asyncio.Event()
    try:
        await client.connect(timeout=None)
        subscribed = [client.subscribe(name) for name in channels]
        for channel in subscribed:
            channel.bind_global(show)  # the channel's events: decrypted, members
            channel.bind("pusher:subscription_error", lambda e: refused.set())
            channel.bind(
                "pusher:subscription_succeeded",
                lambda e: click.echo(f"[subscribed to {e.channel}]", err=True),
            )
        stop = asyncio.ensure_future(refused.wait())
        ended = asyncio.ensure_future(client.connection.wait_for_state("disconnected"))
        await asyncio.wait([stop, ended], return_when=asyncio.FIRST_COMPLETED)
        for future in (stop, ended):
            future.cancel()
        error = client.connection.last_error
        if isinstance(error, ConnectionRefused):
            click.echo(f"Error: the server refused the connection: {error}", err=True)
            if error.code == 4001:
                click.echo("Check PUSHER_KEY (and PUSHER_CLUSTER or PUSHER_HOST).", err=True)
            return 1
        for channel in subscribed:
            if isinstance(channel.error, SubscriptionError):
                click.echo(f"Error: subscription refused: {channel.error}", err=True)
        return 1
    finally:
        await client.disconnect()


@click.command("listen")
@with_appcontext
@click.argument("channels", nargs=-1, required=True)
@click.option(
    "--event", "events", multiple=True, help="Only print events of this name (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--user-id",
    default=DEFAULT_USER_ID,
    show_default=True,
    help="The presence member to join presence channels as.",
)
def listen(channels: tuple[str, ...], events: tuple[str, ...], as_json: bool, user_id: str) -> None:
    """Print the events of CHANNEL... as they arrive, until Ctrl-C.

    One line per event, "CHANNEL EVENT DATA" (or with --json
    {"channel", "event", "data"}), encrypted channels decrypted, presence
    channels' member_added and member_removed too. Private, encrypted and
    presence channels are authorized with the app's own credentials.
    Reconnects as pusher-js does; status lines go to stderr. Needs
    flask-pusher[client].
    """
    for name in channels:
        if not names.valid_channel_name(name):
            raise click.BadParameter(
                f"{name!r} is not a channel name: 1 to 200 of {names.NAME_CHARS}",
                param_hint="CHANNEL",
            )
    if not names.valid_name(user_id):
        raise click.BadParameter(f"1 to 200 of {names.NAME_CHARS}", param_hint="--user-id")
    try:
        import aiohttp  # noqa: F401
        import nacl  # noqa: F401
    except ImportError:
        raise click.ClickException(
            'flask pusher listen needs the client extra: pip install "flask-pusher[client]"'
        ) from None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if "pusher" not in app.extensions:
        raise click.UsageError("This app has no Pusher extension: call Pusher(app).")
    try:
        code = asyncio.run(_listen(app, channels, events, as_json, user_id))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)
