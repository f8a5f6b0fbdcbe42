"""The per-app HTTP client: :class:`pusher.Pusher`, with what 3.3.4 gets wrong fixed."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sized
from typing import Any
from typing import Protocol

import pusher
from pusher.http import POST
from pusher.http import Request
from pusher.util import validate_user_id

from .async_http import AsyncSender

JSONDumps = Callable[[Any], str]


class Recorder(Protocol):
    """What :func:`flask_pusher.testing.record_events` puts on a client."""

    def record(self, request: Request, deferred: bool) -> bool:
        """Record the events of ``request``; ``False`` if it triggers none (send it)."""


class PusherClient(pusher.Pusher):  # type: ignore[misc]
    """A :class:`pusher.Pusher` that the extension builds for each app.

    It differs from its base class in three ways:

    - Event data that is not a string is encoded with ``dumps`` (the extension
      passes ``app.json.dumps``), so what ``jsonify`` accepts (``Decimal``,
      ``datetime``, ``UUID``, dataclasses) can be triggered.
    - :meth:`authenticate` returns ``shared_secret`` as a base64 ``str``; the base
      class returns ``bytes``, which ``jsonify`` cannot encode (pusher-http-python
      3.3.4, ``pusher/authentication_client.py``).
    - :meth:`terminate_user_connections` POSTs to
      ``/apps/{app_id}/users/{user_id}/terminate_connections``, as pusher-http-node
      does; the base class leaves out ``/apps/{app_id}`` (``pusher/pusher_client.py``).

    :param dumps: encodes event data that is not already a string; ``None`` leaves
        it to the base class (``json.dumps`` with ``json_encoder``).
    :param kwargs: the arguments of :class:`pusher.Pusher`.
    """

    def __init__(self, *, dumps: JSONDumps | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dumps = dumps
        self._async_sender = AsyncSender(self.timeout)
        #: Set by :func:`flask_pusher.testing.record_events` while it records.
        self.recorder: Recorder | None = None

    # Read-only views of the settings, as FlaskPusher 1.0.1 (a pusher.Pusher
    # subclass) offered them: pusher.app_id, pusher.host...

    @property
    def app_id(self) -> str:
        """The app id, a string of digits."""
        return str(self._pusher_client.app_id)

    @property
    def key(self) -> str:
        """The app key."""
        return str(self._pusher_client.key)

    @property
    def secret(self) -> str:
        """The app secret."""
        return str(self._pusher_client.secret)

    @property
    def host(self) -> str:
        """The HTTP API host, such as ``api-eu.pusher.com``."""
        return str(self._pusher_client.host)

    @property
    def port(self) -> int:
        """The HTTP API port."""
        return int(self._pusher_client.port)

    @property
    def ssl(self) -> bool:
        """Whether the HTTP API is reached over TLS."""
        return bool(self._pusher_client.ssl)

    @property
    def timeout(self) -> float:
        """The HTTP API request timeout, in seconds."""
        return float(self._pusher_client.timeout)

    def _encode(self, data: Any) -> Any:
        if self._dumps is None or isinstance(data, str):
            return data
        return self._dumps(data)

    # --- requests: built and signed by the official client, sent by the caller ----
    #
    # pusher-http-python's ``@request_method`` methods expose ``make_request``, which
    # validates the arguments, encrypts for encrypted channels and signs the
    # ``pusher.http.Request``. The methods below build requests with it, so the sync
    # methods, the ``*_async`` twins and deferred sending share one signing path.

    def trigger_request(
        self,
        channels: str | Iterable[str],
        event_name: str,
        data: Any,
        socket_id: str | None = None,
    ) -> Request:
        """The signed ``POST /apps/{app_id}/events`` request of :meth:`trigger`."""
        if not isinstance(channels, (str, Sized)):
            channels = list(channels)  # the base class wants a sized collection
        build = self._pusher_client.trigger.make_request
        return build(channels, event_name, self._encode(data), socket_id)

    def trigger_batch_request(
        self, batch: Iterable[dict[str, Any]] = (), already_encoded: bool = False
    ) -> Request:
        """The signed ``POST /apps/{app_id}/batch_events`` request of :meth:`trigger_batch`.

        The dicts in ``batch`` are copied, not changed.
        """
        if already_encoded:
            events = [dict(event) for event in batch]
        else:
            events = [{**event, "data": self._encode(event.get("data"))} for event in batch]
        return self._pusher_client.trigger_batch.make_request(events, already_encoded)

    def send_to_user_request(self, user_id: str, event_name: str, data: Any) -> Request:
        """The signed request of :meth:`send_to_user`: a trigger on
        ``#server-to-user-<user_id>``."""
        user_id = validate_user_id(user_id)
        return self.trigger_request([f"#server-to-user-{user_id}"], event_name, data)

    def channels_info_request(
        self, prefix_filter: str | None = None, attributes: Iterable[str] = ()
    ) -> Request:
        """The signed ``GET /apps/{app_id}/channels`` request of :meth:`channels_info`."""
        return self._pusher_client.channels_info.make_request(prefix_filter, list(attributes))

    def channel_info_request(self, channel: str, attributes: Iterable[str] = ()) -> Request:
        """The signed ``GET /apps/{app_id}/channels/{channel}`` request of :meth:`channel_info`."""
        return self._pusher_client.channel_info.make_request(channel, list(attributes))

    def users_info_request(self, channel: str) -> Request:
        """The signed ``GET .../channels/{channel}/users`` request of :meth:`users_info`."""
        return self._pusher_client.users_info.make_request(channel)

    def terminate_user_connections_request(self, user_id: str) -> Request:
        """The signed ``POST /apps/{app_id}/users/{user_id}/terminate_connections``.

        pusher-http-python 3.3.4 leaves ``/apps/{app_id}`` out of the path.
        """
        user_id = validate_user_id(user_id)
        client = self._pusher_client
        path = f"/apps/{client.app_id}/users/{user_id}/terminate_connections"
        return Request(client, POST, path, {})

    def send(self, request: Request, deferred: bool = False) -> Any:
        """Send a signed request with the configured backend; the decoded JSON answer.

        :param deferred: whether the events were deferred to after a response, for
            :func:`flask_pusher.testing.record_events`.
        :raises pusher.errors.PusherError: the HTTP API answered with an error.
        """
        if self.recorder is not None and self.recorder.record(request, deferred):
            return {}
        return self._pusher_client.http.send_request(request)

    async def send_async(self, request: Request) -> Any:
        """Send a signed request with aiohttp, on the running loop's session."""
        if self.recorder is not None and self.recorder.record(request, False):
            return {}
        return await self._async_sender.send(request)

    async def aclose(self) -> None:
        """Close the running event loop's aiohttp session now (it is closed anyway
        when a loop run by :func:`asyncio.run` shuts down)."""
        await self._async_sender.aclose()

    # --- the HTTP API methods -------------------------------------------------------

    def trigger(
        self,
        channels: str | Iterable[str],
        event_name: str,
        data: Any,
        socket_id: str | None = None,
    ) -> Any:
        """Trigger ``event_name`` on 1 to 100 channels; see :meth:`pusher.Pusher.trigger`."""
        return self.send(self.trigger_request(channels, event_name, data, socket_id))

    def trigger_batch(
        self, batch: Iterable[dict[str, Any]] = (), already_encoded: bool = False
    ) -> Any:
        """Trigger up to 10 events in one request; see :meth:`pusher.Pusher.trigger_batch`.

        The dicts in ``batch`` are copied, not changed.
        """
        return self.send(self.trigger_batch_request(batch, already_encoded))

    def send_to_user(self, user_id: str, event_name: str, data: Any) -> Any:
        """Trigger ``event_name`` on ``#server-to-user-<user_id>`` (user authentication)."""
        return self.send(self.send_to_user_request(user_id, event_name, data))

    def channels_info(
        self, prefix_filter: str | None = None, attributes: Iterable[str] = ()
    ) -> Any:
        """List occupied channels; see :meth:`pusher.Pusher.channels_info`."""
        return self.send(self.channels_info_request(prefix_filter, attributes))

    def channel_info(self, channel: str, attributes: Iterable[str] = ()) -> Any:
        """Describe one channel; see :meth:`pusher.Pusher.channel_info`."""
        return self.send(self.channel_info_request(channel, attributes))

    def users_info(self, channel: str) -> Any:
        """List the users of a presence channel; see :meth:`pusher.Pusher.users_info`."""
        return self.send(self.users_info_request(channel))

    def terminate_user_connections(self, user_id: str) -> Any:
        """Close every connection of a signed-in user
        (https://pusher.com/docs/channels/server_api/terminating-user-connections/)."""
        return self.send(self.terminate_user_connections_request(user_id))

    # --- awaitable twins: the same requests, sent over aiohttp -----------------------

    async def trigger_async(
        self,
        channels: str | Iterable[str],
        event_name: str,
        data: Any,
        socket_id: str | None = None,
    ) -> Any:
        """Awaitable :meth:`trigger`."""
        return await self.send_async(self.trigger_request(channels, event_name, data, socket_id))

    async def trigger_batch_async(
        self, batch: Iterable[dict[str, Any]] = (), already_encoded: bool = False
    ) -> Any:
        """Awaitable :meth:`trigger_batch`."""
        return await self.send_async(self.trigger_batch_request(batch, already_encoded))

    async def send_to_user_async(self, user_id: str, event_name: str, data: Any) -> Any:
        """Awaitable :meth:`send_to_user`."""
        return await self.send_async(self.send_to_user_request(user_id, event_name, data))

    async def channels_info_async(
        self, prefix_filter: str | None = None, attributes: Iterable[str] = ()
    ) -> Any:
        """Awaitable :meth:`channels_info`."""
        return await self.send_async(self.channels_info_request(prefix_filter, attributes))

    async def channel_info_async(self, channel: str, attributes: Iterable[str] = ()) -> Any:
        """Awaitable :meth:`channel_info`."""
        return await self.send_async(self.channel_info_request(channel, attributes))

    async def users_info_async(self, channel: str) -> Any:
        """Awaitable :meth:`users_info`."""
        return await self.send_async(self.users_info_request(channel))

    async def terminate_user_connections_async(self, user_id: str) -> Any:
        """Awaitable :meth:`terminate_user_connections`."""
        return await self.send_async(self.terminate_user_connections_request(user_id))

    def authenticate(
        self, channel: str, socket_id: str, custom_data: Any | None = None
    ) -> dict[str, str]:
        """Sign a channel subscription; ``shared_secret`` is a ``str``."""
        result: dict[str, Any] = super().authenticate(channel, socket_id, custom_data)
        secret = result.get("shared_secret")
        if isinstance(secret, bytes):
            result["shared_secret"] = secret.decode("ascii")
        return result


def bridge_encoder(default: Callable[[Any], Any] | None) -> type[json.JSONEncoder]:
    """A :class:`json.JSONEncoder` class that falls back to ``default``.

    Used for the presence ``channel_data`` and the ``user_data`` that the base class
    encodes itself, with :func:`json.dumps`'s default separators, as the official
    library does: clients that rebuild ``channel_data`` themselves, such as pysher's
    ``json.dumps(user_data)``, then send the bytes that were signed. ``default`` is the
    app's JSON provider's, so what ``jsonify`` accepts can be sent.
    """

    class AppJSONEncoder(json.JSONEncoder):
        def default(self, o: Any) -> Any:
            if default is None:
                return super().default(o)
            return default(o)

    return AppJSONEncoder
