"""The HTTP API on aiohttp: translates requests into :class:`~flask_pusher.server.core.Core`
operations and their results into responses.

Every rule (signatures, event validation, channel listings) is the core's; this
module reads the request, calls the core, applies the effects and answers.
Errors are plain-text bodies with Pusher's status codes
(https://pusher.com/docs/channels/library_auth_reference/rest-api/#response-codes):
400 bad request, 401 authentication, 403 app disabled, 404 unknown app, 413 data
too large; never a 200, never a 500 for anything a client can send.

Each request gets a request id: the ``X-Request-Id`` a proxy sent (nginx's
``$request_id``, say; up to 64 letters, digits, ``-``, ``_``, ``.`` or ``:``)
or a new random one. It is sent back in ``X-Request-Id`` and is in the one
DEBUG line logged per request on the ``flask_pusher.server.http`` logger
(also as the log record's ``request_id`` attribute), so that a client's error
can be found in the server's log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import uuid
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from . import limits
from .core import Core
from .errors import APIError
from .protocol import loads
from .state import AppState
from .state import Effects
from .state import StateView
from .timeouts import read_within
from .timeouts import WATCHDOG

log = logging.getLogger("flask_pusher.server.http")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")


@dataclasses.dataclass(frozen=True, slots=True)
class APICall:
    """One answered HTTP API request, as the I/O layer reports it.

    :ivar app: the app it was for, or ``None`` if unknown.
    :ivar operation: ``trigger``, ``trigger_batch``, ``channels``, ``channel``,
        ``users`` or ``terminate``.
    :ivar received: bytes of the request body; ``sent``: of the response body.
    :ivar error: the error message of a refused request.
    """

    id: str
    app: AppState | None
    operation: str
    method: str
    path: str
    status: int
    body: bytes
    received: int
    sent: int
    error: str | None

    def payload(self) -> Any:
        """The decoded JSON body (of an accepted trigger)."""
        return loads(self.body)


Apply = Callable[[Effects], None]
Observe = Callable[[APICall], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Operation = Callable[[web.Request, AppState, bytes, StateView | None], Effects]
#: Reads what an operation needs from a backend's shared state beforehand:
#: ``(operation name, app, body, channel of the path or None, query) -> view or None``.
ViewReader = Callable[
    [str, AppState, bytes, str | None, Mapping[str, str]], Awaitable[StateView | None]
]

#: The operations that change what other nodes of a cluster see.
_WRITES = frozenset({"trigger", "trigger_batch", "terminate"})

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


def request_id(request: web.Request) -> str:
    """The request's ``X-Request-Id`` if it is a sensible one, else a new id."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Register ``handler`` with :func:`expect_handler` for its ``Expect`` headers,
    watched by the application's :data:`~.timeouts.WATCHDOG` if it has one."""
    watchdog = app.get(WATCHDOG)
    if watchdog is not None:
        handler = watchdog.wrap(handler)
    app.router.add_route(method, path, handler, expect_handler=expect_handler)


def add_fallback(app: web.Application) -> None:
    """Register, last, the route that answers 404 and 405 (with ``Allow``).

    Without it a request matching no route would meet aiohttp's default
    ``Expect`` handler, which answers 500 for a header value it cannot encode.
    """
    catch_all = app.router.add_resource("/{tail:.*}")

    async def fallback(request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is not catch_all:
                allowed |= (await resource.resolve(request))[1]
        if allowed:
            raise web.HTTPMethodNotAllowed(
                request.method, sorted(allowed), text="Method not allowed\n"
            )
        raise web.HTTPNotFound(text="Not found\n")

    watchdog = app.get(WATCHDOG)
    handler = watchdog.wrap(fallback) if watchdog is not None else fallback
    catch_all.add_route("*", handler, expect_handler=expect_handler)


class HTTPApi:
    """Route handlers bound to a :class:`Core` and a function applying effects.

    :param observe: called with an :class:`APICall` after each answer (metrics,
        the console), or ``None``.
    :param view: reads what an operation needs from a cluster's shared state
        before it runs, or ``None``: the core's own state.
    :param settle: awaited after a trigger or terminate before answering (a
        cluster: until the other nodes can see it), or ``None``.
    """

    def __init__(
        self,
        core: Core,
        apply: Apply,
        observe: Observe | None = None,
        view: ViewReader | None = None,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.core = core
        self.apply = apply
        self.observe = observe
        self.view = view
        self.settle = settle

    def add_routes(self, app: web.Application) -> None:
        """Register the API routes, plus pusher-http-python 3.3.4's terminate path
        without ``/apps/{app_id}``."""
        core = self.core
        routes: list[tuple[str, str, str, Operation]] = [
            (
                "POST",
                "/apps/{app_id}/events",
                "trigger",
                lambda r, a, b, v: core.trigger(a, _json_body(b), v),
            ),
            (
                "POST",
                "/apps/{app_id}/batch_events",
                "trigger_batch",
                lambda r, a, b, v: core.trigger_batch(a, _json_body(b), v),
            ),
            (
                "GET",
                "/apps/{app_id}/channels",
                "channels",
                lambda r, a, b, v: core.channels(a, r.query, v),
            ),
            (
                "GET",
                "/apps/{app_id}/channels/{channel}",
                "channel",
                lambda r, a, b, v: core.channel(a, r.match_info["channel"], r.query, v),
            ),
            (
                "GET",
                "/apps/{app_id}/channels/{channel}/users",
                "users",
                lambda r, a, b, v: core.users(a, r.match_info["channel"], v),
            ),
        ]
        terminate: Operation = lambda r, a, b, v: core.terminate(a, r.match_info["user_id"])  # noqa: E731
        for path in (
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            "/users/{user_id}/terminate_connections",
        ):
            routes.append(("POST", path, "terminate", terminate))
        for method, path, name, operation in routes:
            add_route(app, method, path, self._handler(name, operation))

    def _handler(self, name: str, operation: Operation) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            rid = request_id(request)
            app: AppState | None = None
            body = b""
            error = None
            try:
                app = self.core.app_for_request(
                    request.match_info.get("app_id"), request.query.get("auth_key", "")
                )
                body = await read_body(request)
                paths = (request.path, request.raw_path.split("?", 1)[0])
                self.core.authenticate(app, request.method, paths, request.query, body)
                await limits.check_api(self.core.backend, name, app, body)
                view = None
                if self.view is not None:
                    channel = request.match_info.get("channel")
                    view = await self.view(name, app, body, channel, request.query)
                effects = operation(request, app, body, view)
            except APIError as exc:
                error = exc.message
                response = _error(exc.status, exc.message)
            else:
                self.apply(effects)
                if self.settle is not None and name in _WRITES:
                    # Answered once the other nodes can see it (a cache
                    # channel's event, a terminate), as one server would.
                    await self.settle()
                # ASCII-escaped: a user id may hold a lone surrogate, which UTF-8 cannot encode.
                response = web.json_response(effects.result, dumps=_dumps_ascii)
            response.headers["X-Request-Id"] = rid
            sent = len(response.body) if isinstance(response.body, bytes) else 0
            log.debug(
                "%s %s -> %d%s (%d bytes in, %d out) request_id=%s",
                request.method,
                request.path,
                response.status,
                f" {error}" if error else "",
                len(body),
                sent,
                rid,
                extra={"request_id": rid},
            )
            if self.observe is not None:
                self.observe(
                    APICall(
                        rid,
                        app,
                        name,
                        request.method,
                        request.path,
                        response.status,
                        body,
                        len(body),
                        sent,
                        error,
                    )
                )
            return response

        return handler


async def read_body(request: web.Request) -> bytes:
    """The request body, as sent after any ``Content-Encoding`` is undone.

    :raises APIError: 400 for a body that does not decode (a ``gzip`` body
        that is not gzip), 413 for one over the server's size limit, 408 for
        one that takes over :data:`~.timeouts.BODY_TIMEOUT` seconds.
    """
    try:
        if request.content.is_eof():  # all here already (most bodies): no timer
            return await request.read()
        return await read_within(request.read())
    except asyncio.TimeoutError:
        raise APIError(408, "The request body did not arrive in time") from None
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
