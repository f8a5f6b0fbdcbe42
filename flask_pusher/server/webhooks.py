"""Outgoing webhooks: batched, debounced, signed, retried, bounded.

Behaviour follows Pusher's webhooks
(https://pusher.com/docs/channels/server_api/webhooks/):

- ``channel_vacated`` and ``member_removed`` are held back for ``delay``
  seconds (3 s by default); a ``channel_occupied`` or ``member_added`` for the
  same channel (and user) within that time cancels both events.
- A ``cache_miss`` already waiting for a URL is not queued twice.
- Each request is a JSON body ``{"time_ms": <ms>, "events": [...]}`` signed
  with ``X-Pusher-Key`` and ``X-Pusher-Signature`` (HMAC-SHA256 hex of the
  exact bytes sent).

Each webhook URL of an app has one queue and one delivery loop, which sends one
request at a time: the events that queued up meanwhile go into the next request
(at most :data:`MAX_BATCH_EVENTS` events and :data:`MAX_BATCH_BYTES` bytes). A
failed request (network error, timeout or non-2xx status) is retried with the
same body, with exponential backoff, until its oldest event is ``retry_for``
seconds old; then it is dropped. An app's queues together hold at most
``max_queue`` events and ``max_queue_bytes`` bytes of JSON; past that the
oldest waiting events are dropped, with a warning at most every
:data:`DROP_LOG_INTERVAL` seconds. Counters and gauges for each app are in
:attr:`WebhookSender.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pusher.signature

from .. import names
from .. import server_options as defaults
from .config import AppConfig
from .config import WebhookConfig
from .webhook_queue import EventQueue
from .webhook_queue import WebhookStats

log = logging.getLogger("flask_pusher.server.webhooks")

_DELAYED = names.DELAYED_WEBHOOKS
_CANCELLERS = {v: k for k, v in _DELAYED.items()}
#: Seconds an idle delivery loop waits after the first new event, gathering more.
BATCH_WINDOW = 0.05
#: Most events in one request.
MAX_BATCH_EVENTS = 100
#: Most bytes of event JSON in one request (a lone larger event is still sent).
#: Below nginx's default ``client_max_body_size`` of 1 MB.
MAX_BATCH_BYTES = 256 * 1024
#: Seconds between two "queue full" warnings of one app.
DROP_LOG_INTERVAL = 10.0
#: Characters of a receiver's answer quoted in the log.
BODY_LOG_LIMIT = 200

_Key = tuple[str, str, str, str]


def _key(app: AppConfig, kind: str, event: dict[str, Any]) -> _Key:
    return (app.app_id, kind, str(event.get("channel")), str(event.get("user_id")))


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One webhook request, as :attr:`WebhookSender.observer` is told of it.

    ``status`` is ``None`` after a network error or timeout (``error`` says
    which); ``latency`` is in seconds; ``attempt`` counts from 1 (2 is the
    first retry); ``events`` are the names of the events it carried.
    """

    app_id: str
    url: str
    status: int | None
    error: str | None
    latency: float
    attempt: int
    events: tuple[str, ...]
    answer: str

    def fields(self) -> dict[str, Any]:
        """The attempt as a dict (``app_id`` left out)."""
        return {
            "url": self.url,
            "status": self.status,
            "error": self.error,
            "latency": round(self.latency, 4),
            "attempt": self.attempt,
            "retry": self.attempt - 1,
            "events": list(self.events),
            "answer": self.answer,
        }


@dataclasses.dataclass(eq=False)
class _Batch:
    """One request's body, kept to be retried unchanged."""

    events: list[str]
    tokens: list[str | None]
    size: int
    deadline: float  # monotonic time after which it is dropped
    data: bytes
    signature: str
    attempts: int = 0
    failed: bool = False


@dataclasses.dataclass(eq=False)
class _Target:
    """One URL of one app: its queue and delivery loop."""

    app: AppConfig
    hook: WebhookConfig
    owner: _App
    # (monotonic time queued, event JSON, token), oldest first; floods first out.
    queue: EventQueue = dataclasses.field(default_factory=EventQueue)
    cache_misses: set[str] = dataclasses.field(default_factory=set)
    batch: _Batch | None = None
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    idle: bool = False  # waiting for events, to be woken by the next one
    wait: float = 0.0  # the next backoff
    failing_since: float | None = None
    failures: int = 0  # failed requests since failing_since
    task: asyncio.Task[None] | None = None


@dataclasses.dataclass(eq=False)
class _App:
    """One app's URLs and the accounting of its shared cap."""

    stats: WebhookStats
    targets: list[_Target] = dataclasses.field(default_factory=list)
    dropped_unlogged: int = 0
    last_drop_log: float = float("-inf")


class WebhookSender:
    """Sends the apps' webhooks from the event loop, never blocking it.

    :param delay: seconds ``channel_vacated``/``member_removed`` are held back.
        Default 3.0 (Pusher's delay).
    :param backoff: seconds before the first retry of a failed request; doubled
        after each failure up to ``max_backoff``, and reset by a success.
        Default 1.0.
    :param retry_for: seconds after it was queued that an event is dropped if
        still undelivered. Default 300.0 (Pusher retries for 5 minutes).
    :param timeout: seconds allowed for one HTTP request. Default 10.0.
    :param max_queue: most events an app's queues hold (waiting or in flight,
        summed over its URLs); the oldest waiting ones are dropped past it.
        Default 10,000.
    :param max_queue_bytes: most bytes of event JSON an app's queues hold, as
        ``max_queue``. Default 8 MiB.
    :param max_backoff: longest wait between two tries, in seconds. Default 60.0.
    :param close_timeout: most seconds :meth:`close` takes, whatever its
        caller asks for. Default 1.5, so that a shutdown takes less than 2 s.
    :raises ValueError: if ``max_queue`` is below :data:`MAX_BATCH_EVENTS` or
        ``max_queue_bytes`` below :data:`MAX_BATCH_BYTES`.
    """

    def __init__(
        self,
        delay: float = defaults.DEFAULT_WEBHOOK_DELAY,
        backoff: float = defaults.DEFAULT_WEBHOOK_BACKOFF,
        retry_for: float = defaults.DEFAULT_WEBHOOK_RETRY_FOR,
        timeout: float = 10.0,
        *,
        max_queue: int = 10_000,
        max_queue_bytes: int = 8 * 1024 * 1024,
        max_backoff: float = 60.0,
        close_timeout: float = 1.5,
    ) -> None:
        if max_queue < MAX_BATCH_EVENTS or max_queue_bytes < MAX_BATCH_BYTES:
            raise ValueError(
                f"max_queue must be at least {MAX_BATCH_EVENTS} events and "
                f"max_queue_bytes at least {MAX_BATCH_BYTES} bytes (one request's worth)."
            )
        self.delay = delay
        self.backoff = backoff
        self.retry_for = retry_for
        self.timeout = timeout
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_backoff = max_backoff
        self.close_timeout = close_timeout
        #: :class:`WebhookStats` by app ID, for the apps that had a webhook event.
        self.stats: dict[str, WebhookStats] = {}
        self._apps: dict[str, _App] = {}
        self._session: aiohttp.ClientSession | None = None
        self._held: dict[_Key, tuple[AppConfig, dict[str, Any], asyncio.TimerHandle]] = {}
        self._closing = False
        self._closed = False
        #: Called with a :class:`WebhookAttempt` after each request, if set
        #: (the debug console sets it).
        self.observer: Callable[[WebhookAttempt], None] | None = None
        #: Called with the ``token`` of an event given to :meth:`emit` once no
        #: URL will try it again (sent, dropped, or for no URL), but not for
        #: events still pending at shutdown: a cluster acknowledges its shared
        #: queue's entries with it.
        self.on_done: Callable[[str], None] | None = None
        self._tokens: dict[str, int] = {}  # token -> URLs still to finish it

    # -- accepting events --------------------------------------------------

    def emit(self, app: AppConfig, event: dict[str, Any], token: str | None = None) -> None:
        """Accept one event from the core (must run on the event loop).

        :param app: the app the event belongs to; events of apps without
            webhooks are ignored.
        :param event: one webhook event, ``{"name": ..., "channel": ..., ...}``.
        :param token: passed to :attr:`on_done` once the event is finished with.
        """
        if not app.webhooks:
            if token is not None:
                self._done(token)
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
        self._queue(app, event, token)

    def _done(self, token: str) -> None:
        if self.on_done is not None:
            self.on_done(token)

    def _release(self, key: _Key) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._queue(held[0], held[1])

    def _app(self, app: AppConfig) -> _App:
        state = self._apps.get(app.app_id)
        if state is None:
            state = self._apps[app.app_id] = _App(self.stats.setdefault(app.app_id, WebhookStats()))
            state.targets = [_Target(app, hook, state) for hook in app.webhooks]
        return state

    def _queue(self, app: AppConfig, event: dict[str, Any], token: str | None = None) -> None:
        if self._closed:
            log.debug("webhook %s after shutdown: not sent", event)
            return
        state = self._app(app)
        name = event["name"]
        encoded = json.dumps(event)
        now = time.monotonic()
        accepted = 0
        for target in state.targets:
            if not target.hook.accepts(name):
                continue
            if name == "cache_miss":
                if encoded in target.cache_misses:
                    continue  # de-duplicated, as Pusher does
                target.cache_misses.add(encoded)
            accepted += 1
            target.queue.append((now, encoded, token), name)
            state.stats.queued += 1
            state.stats.queued_bytes += len(encoded)
            if target.task is None:
                target.wait = self.backoff
                target.task = asyncio.ensure_future(self._run(target))
            elif target.idle:
                target.wake.set()
        if token is not None:
            if accepted:
                self._tokens[token] = accepted
            else:
                self._done(token)
        self._enforce_cap(state)

    def _enforce_cap(self, state: _App) -> None:
        stats = state.stats
        dropped = 0
        while stats.queued > self.max_queue or stats.queued_bytes > self.max_queue_bytes:
            # Drop state events (a churn's flood) first, then from a failing URL
            # first, the one with most waiting events, so that a healthy URL of
            # the same app keeps its events.
            waiting = [t for t in state.targets if t.queue]
            if not waiting:  # only requests in flight are left
                break
            target = max(
                waiting, key=lambda t: (t.queue.floods, t.failing_since is not None, len(t.queue))
            )
            (_, encoded, token), name = target.queue.evict()
            self._forget(target, encoded, token)
            stats.dropped_by_type[name] = stats.dropped_by_type.get(name, 0) + 1
            dropped += 1
        if dropped:
            stats.dropped_full += dropped
            state.dropped_unlogged += dropped
            now = time.monotonic()
            if now - state.last_drop_log >= DROP_LOG_INTERVAL:
                log.warning(
                    "webhook queue of app %s is full (%d events, %d bytes; the cap is "
                    "%d events or %d bytes): dropped the %d oldest events since the "
                    "last warning, %d in all",
                    state.targets[0].app.app_id,
                    stats.queued,
                    stats.queued_bytes,
                    self.max_queue,
                    self.max_queue_bytes,
                    state.dropped_unlogged,
                    stats.dropped_full,
                )
                state.last_drop_log = now
                state.dropped_unlogged = 0

    def _forget(self, target: _Target, encoded: str, token: str | None) -> None:
        """Account for one event leaving ``target``'s queue or batch."""
        stats = target.owner.stats
        stats.queued -= 1
        stats.queued_bytes -= len(encoded)
        target.cache_misses.discard(encoded)
        if token is not None:
            left = self._tokens.pop(token, 1) - 1
            if left > 0:
                self._tokens[token] = left
            else:
                self._done(token)

    # -- delivering --------------------------------------------------------

    def _take(self, target: _Target) -> _Batch | None:
        """Move the oldest waiting events of ``target`` into a new batch."""
        queue, stats = target.queue, target.owner.stats
        now = time.monotonic()
        expired = 0
        while queue and now - queue[0][0] > self.retry_for:
            _, encoded, token = queue.popleft()
            self._forget(target, encoded, token)
            expired += 1
        if expired:
            stats.dropped_expired += expired
            log.debug("%d webhook events to %s expired in the queue", expired, target.hook.url)
        if not queue:
            return None
        oldest = queue[0][0]
        events: list[str] = []
        tokens: list[str | None] = []
        size = 0
        while queue and len(events) < MAX_BATCH_EVENTS:
            encoded = queue[0][1]
            if events and size + len(encoded) > MAX_BATCH_BYTES:
                break
            tokens.append(queue.popleft()[2])
            events.append(encoded)
            size += len(encoded)
        body = f'{{"time_ms": {int(time.time() * 1000)}, "events": [{", ".join(events)}]}}'
        return _Batch(
            events=events,
            tokens=tokens,
            size=size,
            deadline=oldest + self.retry_for,
            data=body.encode(),
            signature=pusher.signature.sign(target.app.secret, body),
        )

    def _finish(self, target: _Target, batch: _Batch) -> None:
        """Remove ``batch`` from ``target`` (sent or dropped)."""
        target.batch = None
        for encoded, token in zip(batch.events, batch.tokens, strict=True):
            self._forget(target, encoded, token)
        if batch.failed:
            target.owner.stats.retrying -= len(batch.events)

    async def _pause(self, target: _Target, seconds: float) -> None:
        """Wait ``seconds``, or less if :meth:`close` wakes ``target``."""
        target.wake.clear()
        if self._closing:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(target.wake.wait(), seconds)

    async def _run(self, target: _Target) -> None:
        """Deliver ``target``'s queue, one request at a time, until closed.

        After a quiet time the first event waits :data:`BATCH_WINDOW` for
        company; under load, what queued up during a request is the next one.
        """
        gather = True
        while True:
            if target.batch is None:
                if not target.queue:
                    if self._closing:
                        return
                    target.idle = True
                    target.wake.clear()
                    await target.wake.wait()
                    target.idle = False
                    gather = True
                    continue
                if gather:
                    await self._pause(target, BATCH_WINDOW)
                    gather = False
                target.batch = self._take(target)
                if target.batch is None:
                    continue
            batch = target.batch
            if await self._post(target, batch):
                self._finish(target, batch)
                continue
            if self._closing:
                return
            if time.monotonic() + target.wait > batch.deadline:
                target.owner.stats.dropped_expired += len(batch.events)
                log.debug(
                    "webhook to %s dropped after %d tries: %d events",
                    target.hook.url,
                    batch.attempts,
                    len(batch.events),
                )
                self._finish(target, batch)
                if not target.queue:
                    continue  # idle; the next event is tried at once
            await self._pause(target, target.wait)
            target.wait = min(target.wait * 2, self.max_backoff)

    async def _post(self, target: _Target, batch: _Batch) -> bool:
        """Send ``batch`` once; log the first failure of a URL and its recovery."""
        stats = target.owner.stats
        headers = {
            "Content-Type": "application/json",
            "X-Pusher-Key": target.app.key,
            "X-Pusher-Signature": batch.signature,
        }
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        batch.attempts += 1
        stats.requests += 1
        url = target.hook.url
        status: int | None = None
        answer = ""
        error = None
        started = time.monotonic()
        try:
            async with self._session.post(url, data=batch.data, headers=headers) as resp:
                status = resp.status
                answer = await _read_start(resp)
            outcome = f"status {status}, body {answer!r}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            outcome = error = f"{type(exc).__name__}: {exc}"
        if self.observer is not None:
            events = tuple(_event_name(e) for e in batch.events)
            latency = time.monotonic() - started
            self.observer(
                WebhookAttempt(
                    target.app.app_id, url, status, error, latency, batch.attempts, events, answer
                )
            )
        if status is not None and 200 <= status < 300:
            stats.sent += len(batch.events)
            if target.failing_since is not None:
                log.warning(
                    "webhooks to %s recovered after %d failed requests in %.1f s: %s",
                    url,
                    target.failures,
                    time.monotonic() - target.failing_since,
                    outcome,
                )
                target.failing_since = None
                stats.failing_urls -= 1
            target.wait = self.backoff
            log.debug("webhook sent to %s: %d events", url, len(batch.events))
            return True
        stats.failed_requests += 1
        if not batch.failed:
            batch.failed = True
            stats.retrying += len(batch.events)
        if target.failing_since is None:
            target.failing_since = time.monotonic()
            target.failures = 1
            stats.failing_urls += 1
            log.warning(
                "webhook to %s (app %s) failed: %s; retrying with backoff, and logging "
                "further failures of this URL at debug level until it recovers",
                url,
                target.app.app_id,
                outcome,
            )
        else:
            target.failures += 1
            log.debug("webhook to %s failed again (try %d): %s", url, batch.attempts, outcome)
        return False

    # -- shutting down -----------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Send what is pending now, for a bounded time, then stop.

        Held ``channel_vacated``/``member_removed`` events are queued at once;
        each URL gets one more try of its pending requests (no backoff); a URL
        that fails again, or is still sending after ``timeout`` seconds, keeps
        its events undelivered. Logs a warning with the number of events not
        delivered (and those dropped earlier), then closes the HTTP session.

        :param timeout: seconds at most, in all; never more than
            ``close_timeout`` (the default).
        """
        timeout = self.close_timeout if timeout is None else min(timeout, self.close_timeout)
        self._closing = True
        for app, event, handle in list(self._held.values()):
            handle.cancel()
            self._queue(app, event)
        self._held.clear()
        targets = [t for state in self._apps.values() for t in state.targets]
        tasks = {t.task for t in targets if t.task is not None}
        for target in targets:
            target.wake.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for state in self._apps.values():
            lost = []
            for target in state.targets:
                count = len(target.queue) + (len(target.batch.events) if target.batch else 0)
                if count:
                    lost.append(f"{count} to {target.hook.url}")
                state.stats.dropped_shutdown += count
            stats = state.stats
            if lost or stats.dropped_full or stats.dropped_expired:
                log.warning(
                    "webhooks of app %s at shutdown: %d events not delivered (%s); "
                    "dropped earlier: %d (queue full), %d (retried for %g s)",
                    state.targets[0].app.app_id,
                    stats.dropped_shutdown,
                    ", ".join(lost) or "none pending",
                    stats.dropped_full,
                    stats.dropped_expired,
                    self.retry_for,
                )
        self._closed = True
        if self._session is not None:
            await self._session.close()


async def _read_start(resp: aiohttp.ClientResponse) -> str:
    """The first :data:`BODY_LOG_LIMIT` characters of an answer, for the log."""
    data = b""
    while len(data) < BODY_LOG_LIMIT * 4 and not resp.content.at_eof():
        chunk = await resp.content.read(BODY_LOG_LIMIT * 4 - len(data))
        if not chunk:
            break
        data += chunk
    text = data.decode("utf-8", "replace")
    return text if len(text) <= BODY_LOG_LIMIT else text[:BODY_LOG_LIMIT] + "..."


def _event_name(encoded: str) -> str:
    name = json.loads(encoded).get("name")
    return name if isinstance(name, str) else "?"
