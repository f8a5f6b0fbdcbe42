"""A WebSocket server whose every frame the test writes, on the test's own loop: for
close codes, silences and malformed frames that a real Pusher server never
sends on demand (reference §5.3, §5.4, §5.12). Real sockets, aiohttp's server."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aiohttp import web


class ScriptedConnection:
    """One client connection: what it sent, and the socket to write to."""

    def __init__(self, ws: web.WebSocketResponse, path: str) -> None:
        self.ws = ws
        self.path = path
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.done = asyncio.Event()

    async def handshake(self, socket_id: str = "1.1", activity_timeout: int = 120) -> None:
        data = json.dumps({"socket_id": socket_id, "activity_timeout": activity_timeout})
        await self.ws.send_str(json.dumps({"event": "pusher:connection_established", "data": data}))

    async def next_frame(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code=code, message=reason.encode())
        self.done.set()


class ScriptedServer:
    """``async with ScriptedServer() as server``; ``await server.accept()`` gives
    each new connection."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._connections: asyncio.Queue[ScriptedConnection] = asyncio.Queue()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = ScriptedConnection(ws, request.path_qs)
        await self._connections.put(conn)
        async for msg in ws:
            try:
                await conn.received.put(json.loads(msg.data))
            except ValueError:
                await conn.received.put({"raw": msg.data})
        conn.done.set()
        return ws

    async def accept(self, timeout: float = 10.0) -> ScriptedConnection:
        return await asyncio.wait_for(self._connections.get(), timeout)

    async def __aenter__(self) -> ScriptedServer:
        app = web.Application()
        app.router.add_get("/app/{key}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
