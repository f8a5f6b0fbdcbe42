"""The ``pusher`` blueprint: channel authorization, user authentication, webhooks.

Defined at import; :meth:`flask_pusher.Pusher.init_app` registers it on each app
with that app's settings, which give the paths of the routes:

- ``POST {PUSHER_URL_PREFIX}{PUSHER_AUTH}``: channel authorization, single or batch
  (endpoint ``pusher.auth``;
  https://pusher.com/docs/channels/server_api/authorizing-users/, and batches as
  pusher-js-auth 4 sends them, ``lib/pusher-auth.js``).
- ``POST {PUSHER_URL_PREFIX}{PUSHER_USER_AUTH}``: user authentication (endpoint
  ``pusher.user_auth``; https://pusher.com/docs/channels/server_api/authenticating-users/).
- ``POST {PUSHER_URL_PREFIX}{PUSHER_WEBHOOKS}[/<group>]``: webhooks (endpoints
  ``pusher.webhooks`` and ``pusher.webhooks_group``;
  https://pusher.com/docs/channels/server_api/webhooks/).

Every error these routes answer is JSON: ``{"error": "..."}``.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import TYPE_CHECKING

from flask import Blueprint
from flask import current_app
from flask import Flask
from flask import jsonify
from flask import request
from flask import Response
from flask import send_from_directory
from flask import url_for
from flask.blueprints import BlueprintSetupState
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound

from . import names
from .errors import ChannelAuthorizationDenied
from .errors import InvalidRequest
from .errors import JSONMethodNotAllowed
from .errors import JSONNotFound
from .errors import PusherHTTPError
from .errors import UserAuthenticationDenied
from .errors import WebhookTooLarge
from .errors import WebhookVerificationError
from .settings import PusherSettings
from .webhooks import GROUPS
from .webhooks import verify

if TYPE_CHECKING:
    from .extension import Pusher

#: Seconds between two WARNING lines about refused webhooks of one app; the
#: refusals in between are logged at DEBUG and counted in the next warning.
REFUSAL_LOG_INTERVAL = 10.0
_refusals: weakref.WeakKeyDictionary[Flask, tuple[float, int]] = weakref.WeakKeyDictionary()

blueprint = Blueprint("pusher", __name__)
#: The files that the ``pusher.static`` endpoint serves.
STATIC_FOLDER = Path(__file__).with_name("static")
#: The vendored pusher-js build: 8.6.0 with end-to-end encryption, from npm.
PUSHER_JS = "pusher-with-encryption.min.js"
#: The helper that sends the ``X-Socket-ID`` header (see :doc:`/to-others`).
HELPER_JS = "flask-pusher.js"

#: pusher-js-auth's batch keys, ``channel_name[0]``, ``channel_name[1]``...
BATCH_KEY_RE = re.compile(r"channel_name\[([0-9]{1,6})\]")
#: A JavaScript callee such as ``Pusher.auth_callbacks['1']`` (pusher-js
#: ``src/runtimes/web/auth/jsonp_auth.ts``).
JSONP_CALLBACK_RE = re.compile(
    r"[A-Za-z_$][\w$]{0,63}(?:\.[A-Za-z_$][\w$]{0,63}|\[(?:'[\w$]{1,64}'|\"[\w$]{1,64}\"|[0-9]{1,9})\]){0,8}"
)


@blueprint.record
def _add_url_rules(state: BlueprintSetupState) -> None:
    # POST only (and GET on the auth route for JSONP): any other method gets the JSON
    # 405 of reject_other_methods, with werkzeug's Allow header.
    settings: PusherSettings = state.options["pusher_settings"]
    # Not the blueprint's static_folder: with no URL prefix its /static/<filename>
    # would lie behind the app's own static route.
    static = "/static" if settings.url_prefix else "/pusher-static"
    state.add_url_rule(f"{static}/<path:filename>", "static", static_view)
    auth_methods = ["GET", "POST"] if settings.auth_jsonp else ["POST"]
    state.add_url_rule(settings.auth_path, "auth", auth_view, methods=auth_methods)
    state.add_url_rule(settings.user_auth_path, "user_auth", user_auth_view, methods=["POST"])
    state.add_url_rule(settings.webhooks_path, "webhooks", webhook_view, methods=["POST"])
    groups = ", ".join(GROUPS)
    state.add_url_rule(
        f"{settings.webhooks_path}/<any({groups}):group>",
        "webhooks_group",
        webhook_view,
        methods=["POST"],
    )


def static_view(filename: str) -> Response:
    """Serve pusher-js and ``flask-pusher.js`` (endpoint ``pusher.static``): under
    ``{PUSHER_URL_PREFIX}/static/``, or ``/pusher-static/`` with no prefix."""
    return send_from_directory(STATIC_FOLDER, filename)


@blueprint.errorhandler(HTTPException)
def _json_error(error: HTTPException) -> PusherHTTPError:
    # werkzeug's own errors (malformed bodies, MAX_CONTENT_LENGTH) as JSON too.
    return PusherHTTPError.wrap_exception(error)


def reject_other_methods() -> None:
    """Answer a method the extension's routes do not take with a JSON 405, and a
    path under ``PUSHER_URL_PREFIX`` that none of them serves with a JSON 404.

    Werkzeug's routing raises :exc:`~werkzeug.exceptions.MethodNotAllowed` before any
    blueprint is known, so the blueprint's error handler never sees it and Flask
    would answer an HTML page. ``init_app`` puts this first among the app's
    ``before_request`` functions (they run before the routing error is raised): for
    a path of this blueprint, it raises the JSON form with the same ``Allow`` header.
    Other paths keep the app's own handling.
    """
    error = request.routing_exception
    if isinstance(error, NotFound) and not isinstance(error, MethodNotAllowed):
        prefix = current_app.extensions["pusher"].settings.url_prefix
        if prefix and (request.path == prefix or request.path.startswith(prefix + "/")):
            raise JSONNotFound(f"No Pusher route at {request.path[:200]}.")
        return
    if not isinstance(error, MethodNotAllowed):
        return
    adapter = current_app.create_url_adapter(request)
    try:
        # The path's route, found with one of the methods it does take.
        method = next(iter(error.valid_methods or ["POST"]))
        endpoint, _ = adapter.match(method=method)  # type: ignore[union-attr]
    except HTTPException:
        return
    if isinstance(endpoint, str) and endpoint.startswith(f"{blueprint.name}."):
        raise JSONMethodNotAllowed(valid_methods=error.valid_methods)


WEBHOOK_ENDPOINTS = frozenset({"pusher.webhooks", "pusher.webhooks_group"})


def exempt_from_csrf(app: Flask) -> None:
    """Exempt the webhook view from Flask-WTF's ``CSRFProtect`` through its
    public ``exempt`` (https://flask-wtf.readthedocs.io/en/stable/csrf.html#exclude-views-from-protection).

    Pusher's servers send no CSRF token. With ``CSRFProtect`` already
    initialised, the view is exempted now; else a ``before_request`` function
    (registered with ``app.before_request``, so before ``CSRFProtect``'s own
    check, which its later ``init_app`` appends) exempts it once
    ``CSRFProtect`` is there. Other CSRF extensions exempt
    :func:`webhook_view` (endpoints ``pusher.webhooks`` and
    ``pusher.webhooks_group``) with their own ``exempt``.
    """
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(webhook_view)
    else:
        app.before_request(exempt_webhooks_from_csrf)


def exempt_webhooks_from_csrf() -> None:
    """Exempt the webhook view from a ``CSRFProtect`` initialised after the
    extension, at its first webhook request (before ``CSRFProtect``'s check)."""
    if request.endpoint in WEBHOOK_ENDPOINTS:
        csrf = current_app.extensions.get("csrf")
        if csrf is not None:
            csrf.exempt(webhook_view)


def _extension() -> tuple[Pusher, PusherSettings, Any]:
    """The extension, and the current app's settings and client."""
    ext: Pusher = current_app.extensions["pusher"]
    return ext, ext.settings, ext.client


def _params() -> Mapping[str, Any]:
    """The request's parameters: a form body (pusher-js) or a JSON object."""
    if request.is_json:
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # nesting deeper than the JSON decoder's stack
            body = None
        if not isinstance(body, dict):
            raise InvalidRequest("The JSON body must be an object.")
        return body
    return request.form


def _text_param(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"The {name} parameter is missing.")
    return value


def _socket_id(params: Mapping[str, Any]) -> str:
    socket_id = _text_param(params, "socket_id")
    if not names.valid_socket_id(socket_id):
        raise InvalidRequest("The socket_id must be of the form 'digits.digits'.")
    return socket_id


def _batch_channels(params: Mapping[str, Any]) -> list[Any] | None:
    """The channel names of a pusher-js-auth batch in index order, or ``None``."""
    indexed = []
    for key in params:
        # A multipart part without a name has the key None in werkzeug's form.
        match = BATCH_KEY_RE.fullmatch(key) if isinstance(key, str) else None
        if match:
            indexed.append((int(match.group(1)), params[key]))
    if not indexed:
        return None
    return [name for _, name in sorted(indexed, key=lambda item: item[0])]


class _Authorizer:
    """Authorizes the channels of one request; the client and callbacks are looked up once."""

    def __init__(self, ext: Pusher, settings: PusherSettings, client: Any, socket_id: str) -> None:
        self.settings = settings
        self.client = client
        self.socket_id = socket_id
        callbacks = ext.callbacks
        self.routes = callbacks.channels
        self.can_subscribe = current_app.ensure_sync(callbacks.auth) if callbacks.auth else None
        self.member = (
            current_app.ensure_sync(callbacks.channel_data) if callbacks.channel_data else None
        )

    def __call__(self, channel: Any) -> dict[str, str]:
        """Authorize one channel subscription: the JSON body pusher-js expects.

        :raises InvalidRequest: an invalid or public channel name.
        :raises ChannelAuthorizationDenied: refused by ``@pusher.auth``, none registered,
            or an encrypted channel without an encryption master key.
        """
        if not names.valid_name(channel):
            raise InvalidRequest(
                "The channel_name must be 1 to 200 of the characters A-Z a-z 0-9 _ - = @ , . ;"
            )
        if not names.is_private(channel):
            raise InvalidRequest("Only private- and presence- channels need channel authorization.")
        if names.is_encrypted(channel) and not self.settings.encryption_enabled:
            current_app.logger.warning(
                "Refused %s: set PUSHER_ENCRYPTION_MASTER_KEY_BASE64 to use encrypted channels.",
                channel,
            )
            raise ChannelAuthorizationDenied("Encrypted channels are not enabled on this server.")
        route = self.routes.match(channel) if self.routes else None
        member = self._by_route(channel, *route) if route else self._by_callbacks(channel)
        channel_data: dict[str, Any] | None = None
        if names.is_presence(channel):
            channel_data = {"user_id": self.socket_id, **(member or {})}
            if not _is_member_id(channel_data["user_id"]):
                raise TypeError("A presence member's user_id must be a non-empty string or an int.")
        result: dict[str, str] = self.client.authenticate(channel, self.socket_id, channel_data)
        return result

    def _by_route(
        self, channel: str, callback: Callable[..., Any], params: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        """Judge ``channel`` by its ``@pusher.channel`` route: the member, if presence."""
        allowed = current_app.ensure_sync(callback)(**params)
        if not allowed:
            raise ChannelAuthorizationDenied(f"Subscription to {channel} is not authorized.")
        if not names.is_presence(channel):
            return None
        if not isinstance(allowed, Mapping):
            raise TypeError(
                f"A @pusher.channel route for a presence channel must return the member"
                f" dict or a false value, not {type(allowed).__name__}."
            )
        return allowed

    def _by_callbacks(self, channel: str) -> Mapping[str, Any] | None:
        """Judge ``channel`` by ``@pusher.auth`` and ``@pusher.channel_data``."""
        if self.can_subscribe is None:
            raise ChannelAuthorizationDenied(
                "No channel route (@pusher.channel) matches this channel, and no channel"
                " authorization callback is registered (@pusher.auth)."
            )
        if not self.can_subscribe(channel, self.socket_id):
            raise ChannelAuthorizationDenied(f"Subscription to {channel} is not authorized.")
        if not names.is_presence(channel) or self.member is None:
            return None
        member = self.member(channel, self.socket_id)
        if not isinstance(member, Mapping):
            raise TypeError(
                f"@pusher.channel_data must return a dict, not {type(member).__name__}."
            )
        return member


def _is_member_id(value: Any) -> bool:
    if isinstance(value, str):
        return value != ""
    return isinstance(value, int) and not isinstance(value, bool)


def auth_view() -> Response:
    """Channel authorization, single or batch.

    Single: ``socket_id`` and ``channel_name``; answers ``{"auth": "KEY:sig"}`` plus
    ``channel_data`` (presence) or ``shared_secret`` (encrypted). Batch:
    ``channel_name[0]``, ``channel_name[1]``...; answers 200 with
    ``{channel: {"status": 200, "data": {...}}}``, each channel judged on its own
    (a failed one gets its 4xx ``status`` and an ``error``), a repeated name
    answered once, at most ``PUSHER_AUTH_BATCH_LIMIT`` channels. ``GET`` with a
    ``callback`` answers JSONP when ``PUSHER_AUTH_JSONP`` is on.
    """
    ext, settings, client = _extension()
    callback = None
    if request.method == "GET" and settings.auth_jsonp:
        callback = request.args.get("callback", "")
        if not JSONP_CALLBACK_RE.fullmatch(callback):
            raise InvalidRequest("The JSONP callback parameter is missing or not a valid name.")
        params: Mapping[str, Any] = request.args
    else:
        params = _params()
    authorize = _Authorizer(ext, settings, client, _socket_id(params))
    names = _batch_channels(params)
    body: dict[str, Any]
    if names is None:
        body = authorize(params.get("channel_name"))
    else:
        if len(set(map(str, names))) > settings.auth_batch_limit:
            raise InvalidRequest(
                f"A batch may hold at most {settings.auth_batch_limit} channels"
                " (PUSHER_AUTH_BATCH_LIMIT)."
            )
        body = {}
        for name in names:
            key = str(name)
            if key in body:
                continue
            try:
                body[key] = {
                    "status": 200,
                    "data": authorize(name),
                }
            except PusherHTTPError as e:
                body[key] = {"status": e.code, "error": e.description}
    if callback is not None:
        script = f"{callback}({htmlsafe_json_dumps(body)});"
        return Response(script, mimetype="text/javascript")
    return jsonify(body)


def user_auth_view() -> Response:
    """User authentication for ``pusher.signin()``.

    Takes ``socket_id``; answers ``{"auth": "KEY:sig", "user_data": "<JSON>"}`` with
    the dict that ``@pusher.user_data`` returned, or 403 when it returns ``None``
    or none is registered.
    """
    ext, _, client = _extension()
    socket_id = _socket_id(_params())
    user_data = ext.callbacks.user_data
    if user_data is None:
        raise UserAuthenticationDenied(
            "No user authentication callback is registered (@pusher.user_data)."
        )
    user = current_app.ensure_sync(user_data)(socket_id)
    if user is None:
        raise UserAuthenticationDenied("User authentication was refused.")
    if not isinstance(user, Mapping):
        raise TypeError(f"@pusher.user_data must return a dict or None, not {type(user).__name__}.")
    user = dict(user)
    if isinstance(user.get("id"), int) and not isinstance(user["id"], bool):
        user["id"] = str(user["id"])
    if not names.valid_name(user.get("id")):
        raise ValueError(
            "@pusher.user_data must return a dict whose 'id' is 1 to 200 of the"
            f" characters A-Z a-z 0-9 _ - = @ , . ; (got {user.get('id')!r})."
        )
    return jsonify(client.authenticate_user(socket_id, user))


def webhook_view(group: str | None = None) -> Response:
    """Receive a webhook: verify it, run the handlers, answer 200.

    413 for a body over ``PUSHER_WEBHOOK_MAX_BYTES`` (before it is read), 401
    for a missing or wrong key or signature or a stale ``time_ms``, 400 for a
    malformed body, 500 when a handler raises (so Pusher retries).
    """
    ext, settings, _ = _extension()
    body = _webhook_body(settings.webhook_max_bytes)
    try:
        payload = verify(
            settings,
            request.headers.get("X-Pusher-Key"),
            request.headers.get("X-Pusher-Signature"),
            body,
        )
    except WebhookVerificationError as e:
        # The access log shows only "401": say why on the app side, at WARNING at
        # most once per REFUSAL_LOG_INTERVAL (anyone can send refused webhooks).
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        now = time.monotonic()
        last, quiet = _refusals.get(app, (float("-inf"), 0))
        if now - last >= REFUSAL_LOG_INTERVAL:
            _refusals[app] = (now, 0)
            more = f" ({quiet} more refused since the last warning)" if quiet else ""
            current_app.logger.warning("Refused a Pusher webhook (401): %s%s", e.description, more)
        else:
            _refusals[app] = (last, quiet + 1)
            current_app.logger.debug("Refused a Pusher webhook (401): %s", e.description)
        raise
    ext.webhooks.dispatch(payload)
    return jsonify({})


def _webhook_body(limit: int) -> bytes:
    """The request body, read only while it stays within ``limit`` bytes.

    :raises WebhookTooLarge: from ``Content-Length`` before anything is read,
        or once a body without one passes ``limit``.
    """
    too_large = WebhookTooLarge(
        f"The webhook body is larger than {limit} bytes (PUSHER_WEBHOOK_MAX_BYTES)."
    )
    length = request.content_length
    if length is not None:
        if length > limit:
            raise too_large
        return request.get_data()  # cached: handlers may read it again
    stream = request.stream
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(min(65536, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise too_large
    return b"".join(chunks)


@blueprint.app_context_processor
def _template_context() -> dict[str, Any]:
    settings: PusherSettings = current_app.extensions["pusher"].settings
    return {
        "PUSHER_KEY": settings.key,
        "pusher_options": pusher_options,
        "pusher_script": pusher_script,
    }


def pusher_script(pusher_js: bool = True, helper: bool = True) -> Markup:
    """``<script>`` tags for the files the ``pusher`` blueprint serves, no CDN needed.

    In a template, before the script that calls ``new Pusher(...)``::

        {{ pusher_script() }}

    :param pusher_js: include pusher-js 8.6.0 with end-to-end encryption
        (``pusher-with-encryption.min.js``, MIT licence, from npm), which defines
        ``Pusher``. ``False`` if the page loads pusher-js itself.
    :param helper: include ``flask-pusher.js``, which adds the ``X-Socket-ID``
        header to same-origin ``fetch`` and ``XMLHttpRequest`` calls once pusher-js
        is connected (see :doc:`/to-others`).
    """
    files = [name for name, wanted in ((PUSHER_JS, pusher_js), (HELPER_JS, helper)) if wanted]
    return Markup("\n").join(
        Markup('<script src="{}"></script>').format(url_for("pusher.static", filename=name))
        for name in files
    )


HOSTED_SUFFIXES = (".pusher.com", ".pusherapp.com")


def pusher_options(**overrides: Any) -> Markup:
    """The options for ``new Pusher(key, {...})`` in pusher-js 8, as HTML-safe JSON.

    In a template::

        <script>const pusher = new Pusher({{ PUSHER_KEY|tojson }}, {{ pusher_options() }});</script>

    Holds ``cluster`` (``"mt1"`` when unset: pusher-js requires one), ``forceTLS``,
    ``wsHost``/``wsPort``/``wssPort``/``enabledTransports`` when ``PUSHER_HOST`` is
    not one of Pusher's own hosts (a local server), and the
    ``channelAuthorization`` and ``userAuthentication`` endpoints under the prefix
    (pusher-js ``src/core/options.ts``, ``src/core/config.ts``). With Flask-WTF's
    ``CSRFProtect`` installed, both endpoints also send the ``X-CSRFToken`` header.
    ``overrides`` are merged over the top level.
    """
    settings: PusherSettings = current_app.extensions["pusher"].settings
    options: dict[str, Any] = {
        "cluster": settings.cluster or "mt1",
        "forceTLS": settings.ssl,
    }
    if settings.host and not settings.host.endswith(HOSTED_SUFFIXES):
        port = settings.port or (443 if settings.ssl else 80)
        options.update(wsHost=settings.host, wsPort=port, wssPort=port)
        # pusher-js 8 knows one WebSocket transport, "ws", which uses wss:// with
        # forceTLS (src/runtimes/isomorphic/transports/transports.ts).
        options["enabledTransports"] = ["ws"]
    headers = {}
    if "csrf" in current_app.extensions:
        from flask_wtf.csrf import generate_csrf

        headers["X-CSRFToken"] = generate_csrf()
    for option, endpoint in (
        ("channelAuthorization", "pusher.auth"),
        ("userAuthentication", "pusher.user_auth"),
    ):
        options[option] = {"endpoint": url_for(endpoint), "transport": "ajax"}
        if headers:
            options[option]["headers"] = headers
    options.update(overrides)
    return htmlsafe_json_dumps(options)
