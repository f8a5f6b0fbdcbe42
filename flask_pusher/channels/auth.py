"""Channel authorization and user authentication, sent as pusher-js 8.6 sends them.

- an HTTP endpoint: ``POST`` with ``application/x-www-form-urlencoded``
  ``socket_id``, ``channel_name``, then ``params`` and ``params_provider()``,
  encoded as JavaScript's ``encodeURIComponent``, with ``headers`` and
  ``headers_provider()``; success is status 200 exactly and a JSON object
  (pusher-js ``src/core/auth/channel_authorizer.ts``,
  ``src/runtimes/isomorphic/auth/xhr_auth.ts``);
- a batch endpoint as pusher-js-auth 4.0.1 calls it (``lib/pusher-auth.js``): one
  ``POST`` for the channels asked in the same loop iteration, the body starting
  with ``&``, ``channel_name[N]`` unencoded brackets, a JSON answer keyed by channel;
- a callable (pusher-js's ``customHandler``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import TYPE_CHECKING
from urllib.parse import quote

from .errors import AuthError

if TYPE_CHECKING:
    import aiohttp

#: The ``Content-Type`` pusher-js sends to the auth endpoints.
FORM = "application/x-www-form-urlencoded"


@dataclasses.dataclass(frozen=True, slots=True)
class AuthRequest:
    """What a handler is asked: the connection's ``socket_id`` and, for channel
    authorization, the ``channel_name`` (``None`` for user authentication)."""

    socket_id: str
    channel_name: str | None = None


#: A handler: takes an :class:`AuthRequest`, returns the endpoint's JSON object
#: (``{"auth": ..., "channel_data"?, "shared_secret"?, "user_data"?}``), or
#: raises :class:`~flask_pusher.channels.AuthError` to refuse. A coroutine
#: function runs on the client's loop; a plain function in a worker thread.
Handler = Callable[[AuthRequest], "Mapping[str, Any] | Awaitable[Mapping[str, Any]]"]


@dataclasses.dataclass(frozen=True)
class AuthOptions:
    """How the client authorizes channels or authenticates its user (pusher-js's
    ``channelAuthorization`` and ``userAuthentication`` options).

    :param endpoint: the absolute URL to ``POST`` to, such as
        ``"https://example.com/pusher/auth"``.
    :param headers: extra request headers.
    :param params: extra form fields, after ``socket_id`` and ``channel_name``.
    :param headers_provider: called for each request; its headers override ``headers``.
    :param params_provider: called for each request; its fields follow ``params``.
    :param handler: called instead of an HTTP request (pusher-js's ``customHandler``).
    :param batch: channel authorization only: ask for the channels subscribed in the
        same loop iteration in one request, as pusher-js-auth does.
    :param timeout: seconds an HTTP request may take. Default 30.
    :raises ValueError: with neither ``endpoint`` nor ``handler``.
    """

    endpoint: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    headers_provider: Callable[[], Mapping[str, str]] | None = None
    params_provider: Callable[[], Mapping[str, Any]] | None = None
    handler: Handler | None = None
    batch: bool = False
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.endpoint is None and self.handler is None:
            raise ValueError("AuthOptions needs an endpoint URL or a handler.")


def uri_component(value: object) -> str:
    """JavaScript's ``encodeURIComponent``: a space is ``%20``, never ``+``."""
    return quote(str(value), safe="-_.!~*'()")


def _extra(options: AuthOptions) -> tuple[str, dict[str, str]]:
    params = dict(options.params)
    if options.params_provider is not None:
        params.update(options.params_provider())
    headers = {"Content-Type": FORM, **options.headers}
    if options.headers_provider is not None:
        headers.update(options.headers_provider())
    headers["Content-Type"] = FORM
    return "".join(f"&{uri_component(k)}={uri_component(v)}" for k, v in params.items()), headers


def form_body(request: AuthRequest, options: AuthOptions) -> tuple[str, dict[str, str]]:
    """The body and headers pusher-js sends for ``request``."""
    extra, headers = _extra(options)
    body = f"socket_id={uri_component(request.socket_id)}"
    if request.channel_name is not None:
        body += f"&channel_name={uri_component(request.channel_name)}"
    return body + extra, headers


def _refused(request: AuthRequest, message: str, status: int | None) -> AuthError:
    return AuthError(request.channel_name or "", "AuthError", message, status)


def _json_object(request: AuthRequest, text: str, status: int) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _refused(
            request, f"JSON returned from auth endpoint was invalid: {text[:100]!r}", 200
        )
    return data


class Authorizer:
    """Runs one :class:`AuthOptions` for a client: its HTTP session, its batches.

    :param options: the options.
    :param session: a function giving the client's :class:`aiohttp.ClientSession`.
    """

    def __init__(self, options: AuthOptions, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.options = options
        self._session = session
        self._batch: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._batch_socket: str | None = None

    async def __call__(self, request: AuthRequest) -> dict[str, Any]:
        """The endpoint's answer for ``request``.

        :raises AuthError: when the endpoint or handler refuses, or answers badly.
        """
        handler = self.options.handler
        if handler is not None:
            try:
                if inspect.iscoroutinefunction(handler):
                    result = await handler(request)
                else:
                    result = await asyncio.to_thread(handler, request)
                    if inspect.isawaitable(result):
                        result = await result
            except AuthError:
                raise
            except Exception as exc:
                raise _refused(request, f"The auth handler raised {exc!r}", None) from exc
            if not isinstance(result, Mapping):
                raise _refused(request, "The auth handler returned no mapping", None)
            return dict(result)
        if self.options.batch and request.channel_name is not None:
            return await self._batched(request)
        body, headers = form_body(request, self.options)
        status, text = await self._post(request, body, headers)
        if status != 200:
            raise _refused(
                request,
                f"Could not get auth info from your auth endpoint, status: {status}",
                status,
            )
        return _json_object(request, text, status)

    async def _post(
        self, request: AuthRequest, body: str, headers: dict[str, str]
    ) -> tuple[int, str]:
        import aiohttp

        assert self.options.endpoint is not None
        try:
            async with self._session().post(
                self.options.endpoint,
                data=body.encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.options.timeout),
            ) as response:
                return response.status, await response.text(errors="replace")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _refused(request, f"Auth endpoint unreachable: {exc!r}", None) from exc

    async def _batched(self, request: AuthRequest) -> dict[str, Any]:
        assert request.channel_name is not None
        if self._batch and self._batch_socket != request.socket_id:
            self._flush()
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch_socket = request.socket_id
        future = self._batch.get(request.channel_name)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._batch[request.channel_name] = future
        return await asyncio.shield(future)

    def _flush(self) -> None:
        if not self._batch or self._batch_socket is None:
            return
        batch, self._batch = self._batch, {}
        asyncio.get_running_loop().create_task(self._send_batch(self._batch_socket, batch))

    async def _send_batch(
        self, socket_id: str, batch: dict[str, asyncio.Future[dict[str, Any]]]
    ) -> None:
        extra, headers = _extra(self.options)
        names = "".join(f"&channel_name[{i}]={uri_component(n)}" for i, n in enumerate(batch))
        body = f"&socket_id={uri_component(socket_id)}{names}{extra}"
        first = AuthRequest(socket_id, next(iter(batch)))
        try:
            status, text = await self._post(first, body, headers)
            if status != 200:
                raise _refused(
                    first,
                    f"Could not get auth info from your batch endpoint, status: {status}",
                    status,
                )
            answer = _json_object(first, text, status)
        except AuthError as exc:
            for name, future in batch.items():
                if not future.done():
                    future.set_exception(AuthError(name, exc.type, exc.message, exc.status))
            return
        for name, future in batch.items():
            entry = answer.get(name)
            if future.done():
                continue
            if not isinstance(entry, dict):
                future.set_exception(
                    AuthError(name, "AuthError", "Missing from the batch answer", 404)
                )
                continue
            status = entry.get("status", 200)
            data = entry.get("data")
            if status != 200 or isinstance(status, bool) or not isinstance(data, dict):
                code = status if isinstance(status, int) and not isinstance(status, bool) else None
                future.set_exception(
                    AuthError(name, "AuthError", "Refused by the batch endpoint", code)
                )
            else:
                future.set_result(data)
