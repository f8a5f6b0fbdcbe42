"""Outgoing webhooks (reference §3): batched, debounced, signed, retried.

``channel_vacated`` and ``member_removed`` are held back for ``delay``
seconds (3 s by default, reference §3.1); a ``channel_occupied`` or
``member_added`` for the same channel (and user) within that time cancels
both events. Each batch is a JSON body ``{"time_ms": <ms>, "events": [...]}``
signed with ``X-Pusher-Key`` and ``X-Pusher-Signature`` (HMAC-SHA256 hex of
the exact bytes sent). Failed deliveries (network error or non-2xx status) are
retried with exponential backoff for up to ``retry_for`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pusher.signature

from .config import AppConfig
from .config import WebhookConfig

log = logging.getLogger("flask_pusher.server.webhooks")

_DELAYED = {"channel_vacated": "channel_occupied", "member_removed": "member_added"}
_CANCELLERS = {v: k for k, v in _DELAYED.items()}
#: Seconds during which events are gathered into one batch.
BATCH_WINDOW = 0.05

_Key = tuple[str, str, str, str]


def _key(app: AppConfig, kind: str, event: dict[str, Any]) -> _Key:
    return (app.app_id, kind, str(event.get("channel")), str(event.get("user_id")))


class WebhookSender:
    """Sends one app's webhooks from the event loop, never blocking it.

    :param delay: seconds ``channel_vacated``/``member_removed`` are held back.
        Default 3.0 (reference §3.1).
    :param backoff: seconds before the first retry; doubled after each failure.
        Default 1.0.
    :param retry_for: seconds after which a failing delivery is dropped.
        Default 300.0 (reference §3.1).
    :param timeout: seconds allowed for one HTTP request. Default 10.0.
    """

    def __init__(
        self,
        delay: float = 3.0,
        backoff: float = 1.0,
        retry_for: float = 300.0,
        timeout: float = 10.0,
    ) -> None:
        self.delay = delay
        self.backoff = backoff
        self.retry_for = retry_for
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._held: dict[_Key, tuple[AppConfig, dict[str, Any], asyncio.TimerHandle]] = {}
        self._batches: dict[str, tuple[AppConfig, list[dict[str, Any]]]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def emit(self, app: AppConfig, event: dict[str, Any]) -> None:
        """Accept one event from the core (must run on the event loop)."""
        if not app.webhooks:
            return
        name = event["name"]
        if name in _CANCELLERS:
            held = self._held.pop(_key(app, _CANCELLERS[name], event), None)
            if held is not None:
                held[2].cancel()
                log.debug("webhook %s cancelled by %s", held[1], name)
                return
        if name in _DELAYED and self.delay > 0 and not self._closing:
            key = _key(app, name, event)
            loop = asyncio.get_running_loop()
            handle = loop.call_later(self.delay, self._release, key)
            self._held[key] = (app, event, handle)
            return
        self._queue(app, event)

    def _release(self, key: _Key) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._queue(held[0], held[1])

    def _queue(self, app: AppConfig, event: dict[str, Any]) -> None:
        batch = self._batches.setdefault(app.app_id, (app, []))[1]
        if event["name"] == "cache_miss" and event in batch:
            return  # de-duplicated, as Pusher does (reference §3.2)
        batch.append(event)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(BATCH_WINDOW, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        batches, self._batches = self._batches, {}
        for app, events in batches.values():
            for hook in app.webhooks:
                selected = [e for e in events if hook.accepts(e["name"])]
                if selected:
                    task = asyncio.ensure_future(self._deliver(app, hook, selected))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, app: AppConfig, hook: WebhookConfig, events: list[dict[str, Any]]
    ) -> None:
        body = json.dumps({"time_ms": int(time.time() * 1000), "events": events})
        headers = {
            "Content-Type": "application/json",
            "X-Pusher-Key": app.key,
            "X-Pusher-Signature": pusher.signature.sign(app.secret, body),
        }
        data = body.encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        started = time.monotonic()
        wait = self.backoff
        while True:
            try:
                async with self._session.post(hook.url, data=data, headers=headers) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        log.debug("webhook sent to %s: %s", hook.url, body)
                        return
                    problem = f"status {resp.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem = repr(exc)
            elapsed = time.monotonic() - started
            if self._closing or elapsed + wait > self.retry_for:
                log.warning("webhook to %s dropped after %s: %s", hook.url, problem, body)
                return
            log.info("webhook to %s failed (%s), retrying in %.1f s", hook.url, problem, wait)
            await asyncio.sleep(wait)
            wait *= 2

    async def close(self, timeout: float = 5.0) -> None:
        """Send held and batched events now, wait up to ``timeout`` seconds
        for deliveries in flight (no more retries), then close the session."""
        self._closing = True
        for app, event, handle in list(self._held.values()):
            handle.cancel()
            self._queue(app, event)
        self._held.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()
            self._session = None
