"""The :class:`Pusher` extension."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from typing import TypeVar
from weakref import WeakKeyDictionary

from flask import current_app
from flask import Flask

from . import local
from . import views
from .client import bridge_encoder
from .client import PusherClient
from .errors import ConfigurationError
from .settings import check_keywords
from .settings import PusherSettings
from .settings import resolve
from .webhooks import Webhooks

F = TypeVar("F", bound=Callable[..., Any])

AuthCallback = Callable[[str, str], Any]
ChannelDataCallback = Callable[[str, str], Any]
UserDataCallback = Callable[[str], Any]


@dataclasses.dataclass(frozen=True)
class _AppState:
    settings: PusherSettings
    client: PusherClient


class Pusher:
    """Pusher Channels for Flask apps.

    Binds an official :class:`pusher.Pusher` client to each app, serves the
    channel authorization, user authentication and webhook routes, and forwards
    every client method to the current app's client::

        pusher = Pusher(app)                # or Pusher(), then init_app(app)
        pusher.trigger("my-channel", "my-event", {"message": "hello"})

    One extension serves any number of apps, each with its own settings and client.

    :param app: a Flask app to initialise now; ``None`` for the app factory pattern.
    :param options: keyword options, one per ``PUSHER_*`` config key (see
        :doc:`/configuration`). They beat ``app.config`` and lose to the options
        given to :meth:`init_app`.
    :raises TypeError: for an unknown keyword option.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        check_keywords(options, "Pusher()")
        self._options = options
        self._states: WeakKeyDictionary[Flask, _AppState] = WeakKeyDictionary()
        self._auth: AuthCallback | None = None
        self._channel_data: ChannelDataCallback | None = None
        self._user_data: UserDataCallback | None = None
        #: The webhook handler registry: ``@pusher.webhooks.on("member_added")``,
        #: ``@pusher.webhooks.presence`` and so on. See :class:`Webhooks`.
        self.webhooks = Webhooks()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **options: Any) -> None:
        """Register the extension on ``app``.

        Resolves the settings once (``init_app`` options > constructor options >
        ``app.config`` > defaults), builds the app's client, registers the
        ``pusher`` blueprint under ``PUSHER_URL_PREFIX`` and records the extension
        in ``app.extensions["pusher"]``. Later changes to ``app.config`` are not seen.

        :param app: the Flask app.
        :param options: keyword options, as for the constructor.
        :raises TypeError: for an unknown keyword option.
        :raises ConfigurationError: for a missing app id, key or secret, or a
            malformed value; the message names the config key.
        :raises RuntimeError: if a ``Pusher`` extension is already registered on ``app``.
        """
        check_keywords(options, "init_app()")
        if "pusher" in app.extensions:
            raise RuntimeError(
                "A 'Pusher' extension is already registered on this Flask app. Call"
                " init_app() once per app, and use current_app.extensions['pusher']"
                " to reach it."
            )
        settings = resolve(app.config, self._options, options)
        self._states[app] = _AppState(settings, _build_client(app, settings))
        app.extensions["pusher"] = self
        app.register_blueprint(
            views.blueprint,
            url_prefix=settings.url_prefix or None,
            pusher_settings=settings,
        )
        # Runs before Flask-WTF's CSRFProtect check, whichever is initialised first.
        app.before_request_funcs.setdefault(None, []).insert(0, views.exempt_webhooks_from_csrf)
        # First of all: a method our routes do not take gets a JSON 405, even before CSRF.
        app.before_request_funcs[None].insert(0, views.reject_other_methods)
        if settings.local_server:
            app.before_request(local.start_before_first_request)

    def _state(self) -> _AppState:
        try:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        except RuntimeError:
            raise RuntimeError(
                "Working outside of application context: the Pusher extension needs"
                " a current app. Call init_app(app) and use it inside a request or"
                " 'with app.app_context():'."
            ) from None
        state = self._states.get(app)
        if state is None:
            raise RuntimeError(
                "The current Flask app is not registered with this 'Pusher' extension."
                " Call 'pusher.init_app(app)' first."
            )
        return state

    @property
    def client(self) -> PusherClient:
        """The current app's client: a :class:`~flask_pusher.client.PusherClient`,
        the subclass of :class:`pusher.Pusher` that fixes what pusher-http-python
        3.3.4 gets wrong. With ``PUSHER_LOCAL_SERVER`` on, the first use starts the
        in-process local server.

        :raises RuntimeError: if no app registered with this extension is current.
        """
        state = self._state()
        if state.settings.local_server:
            local.ensure_started(state.settings)
        return state.client

    @property
    def settings(self) -> PusherSettings:
        """The current app's resolved settings (frozen; the secret is hidden in ``repr``)."""
        return self._state().settings

    # --- registration decorators -------------------------------------------------

    def auth(self, callback: F) -> F:
        """Register the channel authorization callback.

        ``callback(channel_name: str, socket_id: str) -> bool`` is called in the
        request context for each private, presence and encrypted channel that a
        client asks to subscribe to (reference §1.2, §5.5). Return a true value to
        allow the subscription. It may be ``async def``. Without it every channel is
        refused with 403.
        """
        self._auth = callback
        return callback

    def channel_data(self, callback: F) -> F:
        """Register the presence member callback.

        ``callback(channel_name: str, socket_id: str) -> dict`` returns the presence
        member for a ``presence-`` channel: a dict with ``user_id`` (a string or
        number, at most 128 characters) and optionally ``user_info`` (any JSON,
        at most 1 KB), merged over ``{"user_id": socket_id}`` (reference §1.3). It
        may be ``async def``.
        """
        self._channel_data = callback
        return callback

    def user_data(self, callback: F) -> F:
        """Register the user authentication (signin) callback.

        ``callback(socket_id: str) -> dict | None`` returns the signed-in user:
        ``{"id": str, "user_info": {...}, "watchlist": [str, ...]}``, where only
        ``id`` is required (reference §1.3, §1.5). Return ``None`` to refuse the
        signin with 403. It may be ``async def``.
        """
        self._user_data = callback
        return callback

    # --- forwarded client methods ------------------------------------------------

    def trigger(
        self,
        channels: str | Iterable[str],
        event_name: str,
        data: Any,
        socket_id: str | None = None,
    ) -> Any:
        """Trigger an event on 1 to 100 channels (``POST /apps/{id}/events``, reference §4.2).

        :param channels: a channel name or a list of them.
        :param event_name: the event name, at most 200 characters.
        :param data: a string, sent as it is, or anything the app's JSON provider
            can encode (at most 10 KB encoded).
        :param socket_id: a connection to leave out of the delivery.
        :raises ValueError: too many channels, too much data, or an invalid name.
        :raises pusher.errors.PusherError: the HTTP API answered with an error.
        """
        return self.client.trigger(channels, event_name, data, socket_id)

    def trigger_batch(
        self, batch: Iterable[dict[str, Any]] = (), already_encoded: bool = False
    ) -> Any:
        """Trigger up to 10 events in one request (``POST /apps/{id}/batch_events``).

        :param batch: dicts with ``channel``, ``name``, ``data`` and optional ``socket_id``.
        :param already_encoded: ``True`` if every ``data`` is already a JSON string.
        """
        return self.client.trigger_batch(batch, already_encoded)

    def send_to_user(self, user_id: str, event_name: str, data: Any) -> Any:
        """Send an event to every connection signed in as ``user_id`` (reference §4.2)."""
        return self.client.send_to_user(user_id, event_name, data)

    def channels_info(
        self, prefix_filter: str | None = None, attributes: Iterable[str] = ()
    ) -> Any:
        """List occupied channels (``GET /apps/{id}/channels``, reference §4.2)."""
        return self.client.channels_info(prefix_filter, list(attributes))

    def channel_info(self, channel: str, attributes: Iterable[str] = ()) -> Any:
        """Describe one channel (``GET /apps/{id}/channels/{channel}``, reference §4.2)."""
        return self.client.channel_info(channel, list(attributes))

    def users_info(self, channel: str) -> Any:
        """List the users of a presence channel (``GET .../channels/{channel}/users``)."""
        return self.client.users_info(channel)

    def terminate_user_connections(self, user_id: str) -> Any:
        """Close every connection of a signed-in user (reference §4.2, §4.6)."""
        return self.client.terminate_user_connections(user_id)

    def authenticate(
        self, channel: str, socket_id: str, custom_data: Any | None = None
    ) -> dict[str, str]:
        """Sign a channel subscription (reference §1.3); ``shared_secret`` is a ``str``."""
        return self.client.authenticate(channel, socket_id, custom_data)

    def authenticate_user(self, socket_id: str, user_data: dict[str, Any]) -> dict[str, str]:
        """Sign a user authentication (reference §1.3): ``{"auth", "user_data"}``."""
        result: dict[str, str] = self.client.authenticate_user(socket_id, user_data)
        return result

    def validate_webhook(
        self, key: str, signature: str, body: str | bytes
    ) -> dict[str, Any] | None:
        """Check a webhook as pusher-http-python does (reference §3.3); ``None`` if invalid."""
        result: dict[str, Any] | None = self.client.validate_webhook(key, signature, body)
        return result

    def __getattr__(self, name: str) -> Any:
        # Any other public attribute of pusher.Pusher, for methods added later.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.client, name)


def _build_client(app: Flask, settings: PusherSettings) -> PusherClient:
    kwargs = settings.client_kwargs()
    dumps = None
    if settings.json_encoder is None:
        dumps = app.json.dumps
        default = getattr(app.json, "default", None)
        kwargs["json_encoder"] = bridge_encoder(default if callable(default) else None)
    try:
        return PusherClient(dumps=dumps, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(
            f"The Pusher client refused the settings: {e}. Check the PUSHER_* config"
            " (an encryption master key must be 32 bytes, base64 encoded, in"
            " PUSHER_ENCRYPTION_MASTER_KEY_BASE64)."
        ) from e
