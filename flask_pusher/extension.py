"""The :class:`Pusher` extension."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from typing import TYPE_CHECKING
from typing import TypeVar
from weakref import WeakKeyDictionary

from flask import current_app
from flask import Flask

from . import broadcasting
from . import delivery
from . import holding
from . import local
from . import views
from .client import bridge_encoder
from .client import PusherClient
from .errors import ConfigurationError
from .routes import ChannelRoutes
from .settings import check_keywords
from .settings import PusherSettings
from .settings import resolve
from .webhooks import Webhooks

if TYPE_CHECKING:
    from .broadcasting import BroadcastEvent
    from .outbox import Outbox

F = TypeVar("F", bound=Callable[..., Any])

AuthCallback = Callable[[str, str], Any]
ChannelDataCallback = Callable[[str, str], Any]
UserDataCallback = Callable[[str], Any]


@dataclasses.dataclass(frozen=True)
class Callbacks:
    """What :attr:`Pusher.callbacks` returns: the registered callbacks, or ``None``."""

    #: ``@pusher.auth``: ``(channel_name, socket_id) -> bool``.
    auth: AuthCallback | None
    #: ``@pusher.channel_data``: ``(channel_name, socket_id) -> dict``.
    channel_data: ChannelDataCallback | None
    #: ``@pusher.user_data``: ``(socket_id) -> dict | None``.
    user_data: UserDataCallback | None
    #: The ``@pusher.channel`` routes, in registration order.
    channels: ChannelRoutes


@dataclasses.dataclass(frozen=True)
class _AppState:
    settings: PusherSettings
    client: PusherClient
    holding: holding.Holding | None = None


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
        self._channels = ChannelRoutes()
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
        held = holding.setup(app, settings)
        self._states[app] = _AppState(settings, _build_client(app, settings), held)
        app.extensions["pusher"] = self
        app.register_blueprint(
            views.blueprint,
            url_prefix=settings.url_prefix or None,
            pusher_settings=settings,
        )
        # Through CSRFProtect.exempt, whichever is initialised first.
        views.exempt_from_csrf(app)
        # First of all: a method our routes do not take gets a JSON 405, even before CSRF.
        app.before_request_funcs.setdefault(None, []).insert(0, views.reject_other_methods)
        app.teardown_request(delivery.drop_unsent)
        if settings.local_server:
            app.before_request(local.start_before_first_request)
        if held is not None and held.outbox is not None and settings.outbox_relay_thread:
            app.before_request(held.outbox.start_before_request)

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
    def outbox(self) -> Outbox | None:
        """The current app's :class:`~flask_pusher.outbox.Outbox` (``PUSHER_OUTBOX``),
        or ``None``."""
        held = self._state().holding
        return held.outbox if held is not None else None

    @property
    def can_hold(self) -> bool:
        """Whether ``after_commit=True`` works for the current app: Flask-SQLAlchemy
        was initialised on it before ``pusher.init_app``."""
        return self._state().holding is not None

    @property
    def settings(self) -> PusherSettings:
        """The current app's resolved settings (frozen; the secret is hidden in ``repr``)."""
        return self._state().settings

    # --- registration decorators -------------------------------------------------

    def auth(self, callback: F) -> F:
        """Register the channel authorization callback.

        ``callback(channel_name: str, socket_id: str) -> bool`` is called in the
        request context for each private, presence and encrypted channel that a
        client asks to subscribe to
        (https://pusher.com/docs/channels/server_api/authorizing-users/). Return a true
        value to allow the subscription. It may be ``async def``. Without it every
        channel is refused with 403.
        """
        self._auth = callback
        return callback

    def channel_data(self, callback: F) -> F:
        """Register the presence member callback.

        ``callback(channel_name: str, socket_id: str) -> dict`` returns the presence
        member for a ``presence-`` channel: a dict with ``user_id`` (a string or
        number, at most 128 characters) and optionally ``user_info`` (any JSON,
        at most 1 KB), merged over ``{"user_id": socket_id}``
        (https://pusher.com/docs/channels/using_channels/presence-channels/). It may
        be ``async def``.
        """
        self._channel_data = callback
        return callback

    def user_data(self, callback: F) -> F:
        """Register the user authentication (signin) callback.

        ``callback(socket_id: str) -> dict | None`` returns the signed-in user:
        ``{"id": str, "user_info": {...}, "watchlist": [str, ...]}``, where only
        ``id`` is required
        (https://pusher.com/docs/channels/server_api/authenticating-users/). Return
        ``None`` to refuse the signin with 403. It may be ``async def``.
        """
        self._user_data = callback
        return callback

    def channel(self, pattern: str) -> Callable[[F], F]:
        """Register a channel route: authorize the channels that match ``pattern``.

        ::

            @pusher.channel("private-orders.{order_id:int}")
            def order_channel(order_id: int) -> bool:
                return Order.query.get(order_id).user_id == current_user.id

        ``pattern`` is a channel name with ``{name}`` or ``{name:converter}``
        placeholders, converted with Werkzeug's URL converters (``int``, ``float``,
        ``uuid``, ``any(a, b)``, ``path``, ``string(length=2)``...; see
        https://werkzeug.palletsprojects.com/en/stable/routing/#built-in-converters).
        A plain ``{name}`` stops at ``.``; ``{name:path}`` spans dots. The callback gets
        the parameters as keyword arguments and is called in the request context; it
        may be ``async def``. For a ``private-`` (or ``private-encrypted-``) channel it
        returns a true value to allow the subscription; for a ``presence-`` channel it
        returns the member dict, ``{"user_id": ..., "user_info": {...}}``, merged over
        ``{"user_id": socket_id}``, or a false value to refuse.

        Routes are tried in registration order and the first match decides; a
        channel that matches none falls back to :meth:`auth` and
        :meth:`channel_data`, and without those is refused with 403.

        :param pattern: a pattern that starts with ``private-`` or ``presence-``.
        :raises ValueError: at registration, for an invalid pattern or an unknown
            converter.
        """
        return self._channels.route(pattern)

    @property
    def callbacks(self) -> Callbacks:
        """The registered callbacks and channel routes, as the views use them."""
        return Callbacks(self._auth, self._channel_data, self._user_data, self._channels)

    # --- the HTTP API, forwarded to the current app's client ------------------------

    def trigger(
        self,
        channels: str | Iterable[str],
        event_name: str,
        data: Any,
        socket_id: str | None = None,
        *,
        to_others: bool = False,
        defer: bool | None = None,
        after_commit: bool | None = None,
        outbox: bool | None = None,
    ) -> Any:
        """Trigger an event on 1 to 100 channels (``POST /apps/{app_id}/events``,
        https://pusher.com/docs/channels/library_auth_reference/rest-api/#post-event-trigger-an-event).

        :param channels: a channel name or a list of them.
        :param event_name: the event name, at most 200 characters.
        :param data: a string, sent as it is, or anything the app's JSON provider
            can encode (at most 10 KB encoded).
        :param socket_id: a connection to leave out of the delivery.
        :param to_others: leave out the connection named by the request's
            ``X-Socket-ID`` header (see :doc:`/to-others`); nothing is left out with no
            header, an invalid one, or outside a request.
        :param defer: send after the response (see :doc:`/after-the-response`);
            ``None`` uses ``PUSHER_DEFER``. Outside a request the event is sent at once.
        :param after_commit: hold the event until ``db.session``'s transaction
            commits, drop it on rollback (see :doc:`/reliable-delivery`); ``None``
            uses ``PUSHER_AFTER_COMMIT``.
        :param outbox: write the event into the outbox table in ``db.session``'s
            transaction, for the relay to send (see :doc:`/reliable-delivery`);
            ``None`` uses ``PUSHER_OUTBOX``. It wins over ``after_commit``.
        :returns: the HTTP API's JSON answer, or ``{}`` when deferred or held.
        :raises ValueError: too many channels, too much data, an invalid name, or
            both ``socket_id`` and ``to_others``.
        :raises pusher.errors.PusherError: the HTTP API answered with an error.
        """
        client = self.client
        socket_id = _excluded(socket_id, to_others)
        request = client.trigger_request(channels, event_name, data, socket_id)
        if self._holds(request, after_commit, outbox, defer):
            return {}
        if self._defers(defer) and delivery.defer(client, request):
            return {}
        return client.send(request)

    def trigger_batch(
        self,
        batch: Iterable[dict[str, Any]] = (),
        already_encoded: bool = False,
        *,
        to_others: bool = False,
        defer: bool | None = None,
        after_commit: bool | None = None,
        outbox: bool | None = None,
    ) -> Any:
        """Trigger up to 10 events in one request (``POST /apps/{app_id}/batch_events``,
        https://pusher.com/docs/channels/library_auth_reference/rest-api/#post-batch-events).

        :param batch: dicts with ``channel``, ``name``, ``data`` and optional
            ``socket_id``; they are copied, not changed.
        :param already_encoded: ``True`` if every ``data`` is already a JSON string.
        :param to_others: set each event's ``socket_id`` that is not given to the
            request's ``X-Socket-ID`` header, as for :meth:`trigger`.
        :param defer: as for :meth:`trigger`.
        :param after_commit: as for :meth:`trigger`.
        :param outbox: as for :meth:`trigger`.
        :raises ValueError: an invalid name or too much data.
        :raises pusher.errors.PusherError: the HTTP API answered with an error.
        """
        client = self.client
        batch = _exclude_in_batch(batch, to_others)
        request = client.trigger_batch_request(batch, already_encoded)
        if self._holds(request, after_commit, outbox, defer):
            return {}
        if self._defers(defer) and delivery.defer(client, request):
            return {}
        return client.send(request)

    def broadcast(self, event: BroadcastEvent, *, now: bool = False) -> bool:
        """Send an event object (Laravel's ``ShouldBroadcast``; see :doc:`/broadcasting`).

        Its channels, name and data come from ``event.broadcast_on()``,
        ``broadcast_as()`` and ``broadcast_with()``; nothing is sent when
        ``broadcast_when()`` is false. By default it goes through the outbox
        (``PUSHER_OUTBOX``), else after ``db.session``'s commit (with
        Flask-SQLAlchemy), else at once; ``now=True`` sends it at once (Laravel's
        ``ShouldBroadcastNow``).

        :param event: a :class:`~flask_pusher.broadcasting.BroadcastEvent`.
        :returns: ``False`` when ``broadcast_when()`` said no (or no channel).
        :raises ValueError: as :meth:`trigger`, for invalid names or too much data.
        """
        return broadcasting.broadcast(self, event, now=now)

    def send_to_user(
        self,
        user_id: str,
        event_name: str,
        data: Any,
        *,
        after_commit: bool | None = None,
        outbox: bool | None = None,
    ) -> Any:
        """Send an event to every connection signed in as ``user_id``
        (https://pusher.com/docs/channels/server_api/http-api/#sending-events-to-users).

        Never deferred; ``after_commit`` and ``outbox`` as for :meth:`trigger`.

        :raises ValueError: an invalid user id or event name, or too much data.
        :raises pusher.errors.PusherError: the HTTP API answered with an error.
        """
        client = self.client
        request = client.send_to_user_request(user_id, event_name, data)
        if self._holds(request, after_commit, outbox, False):
            return {}
        return client.send(request)

    def channels_info(
        self, prefix_filter: str | None = None, attributes: Iterable[str] = ()
    ) -> Any:
        """List occupied channels (``GET /apps/{app_id}/channels``): ``{"channels": {...}}``.

        :param prefix_filter: only the channels whose name starts with it.
        :param attributes: such as ``["user_count"]`` (presence channels only).
        """
        return self.client.channels_info(prefix_filter, attributes)

    def channel_info(self, channel: str, attributes: Iterable[str] = ()) -> Any:
        """Describe one channel (``GET /apps/{app_id}/channels/{channel}``):
        ``{"occupied": bool, ...}``.

        :param attributes: ``user_count``, ``subscription_count`` or ``cache``.
        """
        return self.client.channel_info(channel, attributes)

    def users_info(self, channel: str) -> Any:
        """List the users of a presence channel
        (``GET /apps/{app_id}/channels/{channel}/users``): ``{"users": [{"id": ...}]}``."""
        return self.client.users_info(channel)

    def terminate_user_connections(self, user_id: str) -> Any:
        """Close every connection of a signed-in user
        (``POST /apps/{app_id}/users/{user_id}/terminate_connections``)."""
        return self.client.terminate_user_connections(user_id)

    # --- awaitable twins, for async views and background tasks ----------------------

    async def trigger_async(
        self,
        channels: str | Iterable[str],
        event_name: str,
        data: Any,
        socket_id: str | None = None,
        *,
        to_others: bool = False,
    ) -> Any:
        """Awaitable :meth:`trigger`, sent over aiohttp (needs ``aiohttp``). Never
        deferred, never held for a commit nor written to the outbox: call :meth:`trigger`
        with ``outbox=True`` or ``after_commit=True`` for those."""
        client = self.client
        socket_id = _excluded(socket_id, to_others)
        return await client.trigger_async(channels, event_name, data, socket_id)

    async def trigger_batch_async(
        self,
        batch: Iterable[dict[str, Any]] = (),
        already_encoded: bool = False,
        *,
        to_others: bool = False,
    ) -> Any:
        """Awaitable :meth:`trigger_batch`, sent over aiohttp. Never deferred nor held."""
        batch = _exclude_in_batch(batch, to_others)
        return await self.client.trigger_batch_async(batch, already_encoded)

    async def send_to_user_async(self, user_id: str, event_name: str, data: Any) -> Any:
        """Awaitable :meth:`send_to_user`."""
        return await self.client.send_to_user_async(user_id, event_name, data)

    async def channels_info_async(
        self, prefix_filter: str | None = None, attributes: Iterable[str] = ()
    ) -> Any:
        """Awaitable :meth:`channels_info`."""
        return await self.client.channels_info_async(prefix_filter, attributes)

    async def channel_info_async(self, channel: str, attributes: Iterable[str] = ()) -> Any:
        """Awaitable :meth:`channel_info`."""
        return await self.client.channel_info_async(channel, attributes)

    async def users_info_async(self, channel: str) -> Any:
        """Awaitable :meth:`users_info`."""
        return await self.client.users_info_async(channel)

    async def terminate_user_connections_async(self, user_id: str) -> Any:
        """Awaitable :meth:`terminate_user_connections`."""
        return await self.client.terminate_user_connections_async(user_id)

    async def aclose(self) -> None:
        """Close the current app's aiohttp session of the running event loop.

        Not needed in Flask's ``async def`` views or under :func:`asyncio.run`: the
        session closes when its loop shuts down. Call it before closing a loop that
        you run by hand.
        """
        await self.client.aclose()

    # --- signing, no HTTP request ---------------------------------------------------

    def authenticate(
        self, channel: str, socket_id: str, custom_data: Any | None = None
    ) -> dict[str, str]:
        """Sign a channel subscription
        (https://pusher.com/docs/channels/library_auth_reference/auth-signatures/):
        ``{"auth": "key:signature"}``, plus ``channel_data`` (presence) or
        ``shared_secret`` (encrypted channels, a base64 ``str``)."""
        return self.client.authenticate(channel, socket_id, custom_data)

    def authenticate_user(self, socket_id: str, user_data: dict[str, Any]) -> dict[str, str]:
        """Sign a user authentication (signin): ``{"auth", "user_data"}``."""
        result: dict[str, str] = self.client.authenticate_user(socket_id, user_data)
        return result

    def validate_webhook(
        self, key: str, signature: str, body: str | bytes
    ) -> dict[str, Any] | None:
        """Check a webhook as pusher-http-python does; the decoded body, or ``None``
        if the key or signature is wrong
        (https://pusher.com/docs/channels/server_api/webhooks/#authentication)."""
        result: dict[str, Any] | None = self.client.validate_webhook(key, signature, body)
        return result

    # --- the client's settings, as FlaskPusher 1.0.1 offered them -------------------

    @property
    def app_id(self) -> str:
        """The current app's app id (``PUSHER_APP_ID``)."""
        return self.client.app_id

    @property
    def key(self) -> str:
        """The current app's key (``PUSHER_KEY``)."""
        return self.client.key

    @property
    def secret(self) -> str:
        """The current app's secret (``PUSHER_SECRET``)."""
        return self.client.secret

    @property
    def host(self) -> str:
        """The HTTP API host (``PUSHER_HOST``, or the cluster's)."""
        return self.client.host

    @property
    def port(self) -> int:
        """The HTTP API port (``PUSHER_PORT``, or 443/80)."""
        return self.client.port

    @property
    def ssl(self) -> bool:
        """Whether the HTTP API is reached over TLS (``PUSHER_SSL``)."""
        return self.client.ssl

    @property
    def timeout(self) -> float:
        """The HTTP API timeout in seconds (``PUSHER_TIMEOUT``)."""
        return self.client.timeout

    def _holds(
        self, request: Any, after_commit: bool | None, outbox: bool | None, defer: bool | None
    ) -> bool:
        state = self._state()
        return holding.hold(
            state.holding,
            state.settings,
            state.client,
            request,
            after_commit,
            outbox,
            self._defers(defer),
        )

    def _defers(self, defer: bool | None) -> bool:
        return self.settings.defer if defer is None else defer


def _excluded(socket_id: str | None, to_others: bool) -> str | None:
    if not to_others:
        return socket_id
    if socket_id is not None:
        raise ValueError("Give socket_id or to_others=True, not both.")
    return delivery.socket_id_to_exclude()


def _exclude_in_batch(batch: Iterable[dict[str, Any]], to_others: bool) -> list[dict[str, Any]]:
    if not to_others:
        return list(batch)
    socket_id = delivery.socket_id_to_exclude()
    if socket_id is None:
        return list(batch)
    return [
        event if event.get("socket_id") else {**event, "socket_id": socket_id} for event in batch
    ]


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
