"""The operations routes: ``/health``, ``/ready`` and ``/metrics``.

:class:`Ops` answers a liveness probe, a readiness probe (Kubernetes'
`probes <https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/>`_)
and Prometheus's scrape, on the main port or, with ``--metrics-port``, on a
listener of their own.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .http_api import add_route
from .metrics import Metrics


class Ops:
    """``/health``, ``/ready`` and, with metrics on, ``/metrics``.

    :param metrics: the server's metrics, or ``None`` (no ``/metrics``).
    :param node: this server process's name, in ``/health`` and ``/ready``.
    """

    def __init__(self, metrics: Metrics | None, node: str = "") -> None:
        self.metrics = metrics
        self.node = node
        #: Why the server is not ready, or ``None``: see :meth:`ready`.
        self.not_ready: str | None = None
        #: More readiness checks, each returning a reason or ``None``; cluster
        #: mode adds one that its shared store answers.
        self.readiness_checks: list[Callable[[], str | None]] = []

    def add_routes(self, app: web.Application) -> None:
        """Add ``/health``, ``/ready`` and, with metrics on, ``/metrics`` to ``app``."""
        add_route(app, "GET", "/health", self.health)
        add_route(app, "GET", "/ready", self.ready)
        if self.metrics is not None:
            add_route(app, "GET", "/metrics", self.scrape)

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``: 200 while the process serves (a liveness probe)."""
        return web.json_response({"status": "ok", "node": self.node})

    async def ready(self, request: web.Request) -> web.Response:
        """``GET /ready``: 200 ``{"ready": true}`` when accepting connections,
        else 503 ``{"ready": false, "reason": ...}`` (a readiness probe)."""
        reason = self.not_ready
        for check in self.readiness_checks:
            if reason is not None:
                break
            reason = check()
        if reason is not None:
            return web.json_response({"ready": False, "reason": reason}, status=503)
        return web.json_response({"ready": True, "node": self.node})

    async def scrape(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus exposition (text or OpenMetrics, as accepted)."""
        assert self.metrics is not None
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response
