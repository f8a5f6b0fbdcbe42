"""Fixtures of the client's tests: the plugin's local server, a Flask app with the
extension serving the auth routes over real HTTP (what the client POSTs is kept),
and ``run`` for a coroutine with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from collections.abc import Iterator
from typing import Any
from typing import TypeVar

import pytest
from flask import Flask
from flask import request

from flask_pusher import Pusher
from flask_pusher.channels import AuthOptions
from flask_pusher.channels import ChannelsClient
from flask_pusher.server import LocalServer
from flask_pusher.testing import TEST_KEY

from ..serving import serve_http

T = TypeVar("T")
TIMEOUT = 10.0


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run ``coro`` on a new loop; fail the test if it takes over ``timeout`` s."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class AuthApp:
    """The app's auth routes over HTTP, and what reached them."""

    def __init__(self, app: Flask, url: str) -> None:
        self.app = app
        self.url = url
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    @property
    def pusher(self) -> Pusher:
        ext: Pusher = self.app.extensions["pusher"]
        return ext

    def options(self, **kwargs: Any) -> dict[str, Any]:
        """``ChannelsClient`` keyword arguments for the local server and this app."""
        return {
            "channel_authorization": AuthOptions(endpoint=f"{self.url}/pusher/auth"),
            "user_authentication": AuthOptions(endpoint=f"{self.url}/pusher/user-auth"),
            **kwargs,
        }


@pytest.fixture
def auth_app(pusher_app: Flask) -> Iterator[AuthApp]:
    """``pusher_app`` with permissive callbacks: ``private-forbidden-*`` is refused,
    presence members and users are named by the ``user`` form field (default
    ``"u1"``), watchlists by ``watch``."""
    pusher: Pusher = pusher_app.extensions["pusher"]

    @pusher.auth
    def can(channel_name: str, socket_id: str) -> bool:
        return not channel_name.startswith("private-forbidden")

    @pusher.channel_data
    def member(channel_name: str, socket_id: str) -> dict[str, Any]:
        user = request.form.get("user", "u1")
        return {"user_id": user, "user_info": {"name": user.upper()}}

    @pusher.user_data
    def user(socket_id: str) -> dict[str, Any]:
        data: dict[str, Any] = {"id": request.form.get("user", "u1")}
        if request.form.get("watch"):
            data["watchlist"] = request.form["watch"].split(",")
        return data

    requests: list[tuple[str, str, dict[str, str]]] = []

    @pusher_app.before_request
    def keep() -> None:
        requests.append((request.path, request.get_data(as_text=True), dict(request.headers)))

    with serve_http(pusher_app) as url:
        app = AuthApp(pusher_app, url)
        app.requests = requests
        yield app


def make_client(server: LocalServer, key: str = TEST_KEY, **kwargs: Any) -> ChannelsClient:
    """A client of ``server`` (not connected)."""
    return ChannelsClient(key, host=server.host, port=server.port, use_tls=False, **kwargs)
