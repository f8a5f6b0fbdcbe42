"""The HTTP API on aiohttp: translates requests into :class:`~flask_pusher.server.core.Core`
operations and their results into responses.

Every rule (signatures, event validation, channel listings) is the core's; this
module reads the request, calls the core, applies the effects and answers.
Errors are plain-text bodies with Pusher's status codes
(https://pusher.com/docs/channels/library_auth_reference/rest-api/#response-codes):
400 bad request, 401 authentication, 403 app disabled, 404 unknown app, 413 data
too large; never a 200, never a 500 for anything a client can send.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .core import Core
from .errors import APIError
from .protocol import loads
from .state import AppState
from .state import Effects

log = logging.getLogger("flask_pusher.server")

Apply = Callable[[Effects], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Operation = Callable[[web.Request, AppState, bytes], Effects]

_dumps_ascii = json.JSONEncoder(separators=(",", ":")).encode


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


async def expect_handler(request: web.Request) -> None:
    """Answer ``Expect: 100-continue``; refuse any other expectation with 417.

    aiohttp's default handler answers 500 for a header it cannot decode; this
    one never raises anything but the 417.
    """
    expect = request.headers.get("Expect", "")
    if expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return
    raise web.HTTPExpectationFailed(text="Only 'Expect: 100-continue' is supported\n")


class HTTPApi:
    """Route handlers bound to a :class:`Core` and a function applying effects."""

    def __init__(self, core: Core, apply: Apply) -> None:
        self.core = core
        self.apply = apply

    def add_routes(self, app: web.Application) -> None:
        """Register the API routes, plus pusher-http-python 3.3.4's terminate path
        without ``/apps/{app_id}``."""
        core = self.core
        routes: list[tuple[str, str, Operation]] = [
            ("POST", "/apps/{app_id}/events", lambda r, a, b: core.trigger(a, _json_body(b))),
            (
                "POST",
                "/apps/{app_id}/batch_events",
                lambda r, a, b: core.trigger_batch(a, _json_body(b)),
            ),
            ("GET", "/apps/{app_id}/channels", lambda r, a, b: core.channels(a, r.query)),
            (
                "GET",
                "/apps/{app_id}/channels/{channel}",
                lambda r, a, b: core.channel(a, r.match_info["channel"], r.query),
            ),
            (
                "GET",
                "/apps/{app_id}/channels/{channel}/users",
                lambda r, a, b: core.users(a, r.match_info["channel"]),
            ),
        ]
        terminate: Operation = lambda r, a, b: core.terminate(a, r.match_info["user_id"])  # noqa: E731
        routes.append(("POST", "/apps/{app_id}/users/{user_id}/terminate_connections", terminate))
        routes.append(("POST", "/users/{user_id}/terminate_connections", terminate))
        for method, path, operation in routes:
            app.router.add_route(
                method, path, self._handler(operation), expect_handler=expect_handler
            )

    def _handler(self, operation: Operation) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                app = self.core.app_for_request(
                    request.match_info.get("app_id"), request.query.get("auth_key", "")
                )
                body = await _read(request)
                paths = (request.path, request.raw_path.split("?", 1)[0])
                self.core.authenticate(app, request.method, paths, request.query, body)
                effects = operation(request, app, body)
            except APIError as exc:
                log.debug("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
                return _error(exc.status, exc.message)
            self.apply(effects)
            # ASCII-escaped: a user id may hold a lone surrogate, which UTF-8 cannot encode.
            return web.json_response(effects.result, dumps=_dumps_ascii)

        return handler


async def _read(request: web.Request) -> bytes:
    """The request body, as sent after any ``Content-Encoding`` is undone.

    :raises APIError: 400 for a body that does not decode (a ``gzip`` body
        that is not gzip), 413 for one over the server's size limit.
    """
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise APIError(413, "Request body too large") from None
    except Exception as exc:  # aiohttp raises ContentEncodingError, zlib errors, ...
        reason = type(exc).__name__
        raise APIError(400, f"The request body could not be read ({reason})") from None


def _json_body(body: bytes) -> Any:
    try:
        return loads(body)
    except (ValueError, TypeError):
        raise APIError(400, "The body must be a JSON object") from None
