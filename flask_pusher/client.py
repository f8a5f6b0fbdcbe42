"""The per-app HTTP client: :class:`pusher.Pusher`, with what 3.3.4 gets wrong fixed."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import pusher
from pusher.http import POST
from pusher.http import Request
from pusher.util import validate_user_id

JSONDumps = Callable[[Any], str]


class PusherClient(pusher.Pusher):  # type: ignore[misc]
    """A :class:`pusher.Pusher` that the extension builds for each app.

    It differs from its base class in three ways:

    - Event data that is not a string is encoded with ``dumps`` (the extension
      passes ``app.json.dumps``), so what ``jsonify`` accepts (``Decimal``,
      ``datetime``, ``UUID``, dataclasses) can be triggered.
    - :meth:`authenticate` returns ``shared_secret`` as a base64 ``str``; the base
      class returns ``bytes``, which ``jsonify`` cannot encode (reference §1.4).
    - :meth:`terminate_user_connections` POSTs to
      ``/apps/{app_id}/users/{user_id}/terminate_connections``; the base class
      leaves out ``/apps/{app_id}`` (reference §4.6).

    :param dumps: encodes event data that is not already a string; ``None`` leaves
        it to the base class (``json.dumps`` with ``json_encoder``).
    :param kwargs: the arguments of :class:`pusher.Pusher`.
    """

    def __init__(self, *, dumps: JSONDumps | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dumps = dumps

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

    def trigger(
        self,
        channels: str | Iterable[str],
        event_name: str,
        data: Any,
        socket_id: str | None = None,
    ) -> Any:
        """Trigger ``event_name`` on 1 to 100 channels; see :meth:`pusher.Pusher.trigger`."""
        return super().trigger(channels, event_name, self._encode(data), socket_id)

    def trigger_batch(
        self, batch: Iterable[dict[str, Any]] = (), already_encoded: bool = False
    ) -> Any:
        """Trigger up to 10 events in one request; see :meth:`pusher.Pusher.trigger_batch`.

        The dicts in ``batch`` are copied, not changed.
        """
        if already_encoded:
            return super().trigger_batch(list(batch), already_encoded)
        events = [{**event, "data": self._encode(event.get("data"))} for event in batch]
        return super().trigger_batch(events, already_encoded)

    def send_to_user(self, user_id: str, event_name: str, data: Any) -> Any:
        """Trigger ``event_name`` on ``#server-to-user-<user_id>`` (user authentication)."""
        return super().send_to_user(user_id, event_name, self._encode(data))

    def authenticate(
        self, channel: str, socket_id: str, custom_data: Any | None = None
    ) -> dict[str, str]:
        """Sign a channel subscription; ``shared_secret`` is a ``str`` (reference §1.3)."""
        result: dict[str, Any] = super().authenticate(channel, socket_id, custom_data)
        secret = result.get("shared_secret")
        if isinstance(secret, bytes):
            result["shared_secret"] = secret.decode("ascii")
        return result

    def terminate_user_connections(self, user_id: str) -> Any:
        """Close every connection of a signed-in user (reference §4.2, §4.6)."""
        user_id = validate_user_id(user_id)
        client = self._pusher_client
        path = f"/apps/{client.app_id}/users/{user_id}/terminate_connections"
        return client.http.send_request(Request(client, POST, path, {}))


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
