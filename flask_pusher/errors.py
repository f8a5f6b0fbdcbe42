"""Errors raised by Flask-Pusher.

Two kinds, as in the Pallets extensions:

- Request failures are :class:`werkzeug.exceptions.HTTPException` subclasses whose
  body is JSON, ``{"error": "<description>"}``. Handle them in your app with
  ``@app.errorhandler(ChannelAuthorizationDenied)`` and so on.
- Setup mistakes raise :class:`ConfigurationError` (a :class:`ValueError`),
  :class:`TypeError` or :class:`RuntimeError` at ``init_app`` with a message that says
  what to do.
"""

from __future__ import annotations

import json
from typing import Any

from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import Forbidden
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import InternalServerError
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.exceptions import Unauthorized


class PusherHTTPError(HTTPException):
    """Base class of the request failures answered by the extension's routes.

    The response body is ``{"error": description}`` with the content type
    ``application/json``; never an HTML error page.
    """

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        return json.dumps({"error": self.description})

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        headers = [h for h in super().get_headers(environ, scope) if h[0] != "Content-Type"]
        return [("Content-Type", "application/json"), *headers]

    @classmethod
    def wrap_exception(cls, error: HTTPException) -> PusherHTTPError:
        """Return ``error`` as a JSON error with the same status code and description.

        Used for werkzeug's own errors (a malformed form body, a body over
        ``MAX_CONTENT_LENGTH``) raised inside the extension's routes.
        """
        if isinstance(error, PusherHTTPError):
            return error
        wrapped = cls(description=error.description)
        wrapped.code = error.code
        return wrapped


class InvalidRequest(PusherHTTPError, BadRequest):
    """400: the request to an auth or webhook route is malformed.

    For example a missing or malformed ``socket_id`` (``digits.digits``, as
    pusher-http-python checks it in ``pusher/util.py``), an invalid channel name, a
    public channel sent for authorization, or a batch of more than
    ``PUSHER_AUTH_BATCH_LIMIT`` channels.
    """


class ChannelAuthorizationDenied(PusherHTTPError, Forbidden):
    """403: channel authorization was refused.

    Raised when no ``@pusher.auth`` callback is registered, when it returns a
    false value, or for an encrypted channel when no encryption master key is
    configured. pusher-js emits ``pusher:subscription_error`` with ``status: 403``
    (``src/core/channels/channel.ts``).
    """


class UserAuthenticationDenied(PusherHTTPError, Forbidden):
    """403: user authentication (signin) was refused.

    Raised when no ``@pusher.user_data`` callback is registered or it returned
    ``None``. pusher-js emits ``pusher:signin_error`` (``src/core/user.ts``).
    """


class WebhookVerificationError(PusherHTTPError, Unauthorized):
    """401: a webhook's ``X-Pusher-Key``, ``X-Pusher-Signature`` or ``time_ms`` is
    missing or wrong (https://pusher.com/docs/channels/server_api/webhooks/#authentication)."""


class InvalidWebhook(PusherHTTPError, BadRequest):
    """400: a verified webhook body is not ``{"time_ms": int, "events": [{...}]}``."""


class WebhookTooLarge(PusherHTTPError, RequestEntityTooLarge):
    """413: a webhook body over ``PUSHER_WEBHOOK_MAX_BYTES`` (1 MiB by default),
    refused from its ``Content-Length`` before the body is read, or as soon as
    a body without one (``Transfer-Encoding: chunked``) passes the limit."""


class WebhookHandlerError(PusherHTTPError, InternalServerError):
    """500: a webhook handler raised. The error is logged, and Pusher retries the
    webhook with backoff for up to 5 minutes
    (https://pusher.com/docs/channels/server_api/webhooks/)."""


class JSONMethodNotAllowed(PusherHTTPError, MethodNotAllowed):
    """405 with a JSON body and an ``Allow`` header: a method other than ``POST`` on the
    extension's routes (or ``GET`` on the auth route, with ``PUSHER_AUTH_JSONP`` on)."""


class JSONNotFound(PusherHTTPError, NotFound):
    """404 with a JSON body: a path under ``PUSHER_URL_PREFIX`` that no route of the
    extension serves (``/pusher/events/bogus``, say)."""


class ConfigurationError(ValueError):
    """A ``PUSHER_*`` setting or keyword option is missing or malformed.

    Raised by :meth:`flask_pusher.Pusher.init_app`; the message names the config key
    and the keyword argument, and says what value is expected.
    """
