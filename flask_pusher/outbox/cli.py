"""``flask pusher relay`` and ``flask pusher outbox``: the outbox's commands."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from types import FrameType
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext


def _outbox() -> Any:
    pusher = current_app.extensions.get("pusher")
    if pusher is None:
        raise click.UsageError(
            "This app has no Pusher extension: call Pusher(app) or pusher.init_app(app)."
        )
    outbox = pusher.outbox
    if outbox is None:
        raise click.UsageError(
            "PUSHER_OUTBOX is off for this app: set PUSHER_OUTBOX = True (with"
            " Flask-SQLAlchemy initialised before pusher.init_app(app))."
        )
    return outbox


@click.command("relay")
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.01, 3600),
    default=None,
    help="Seconds between looks at an idle outbox (default PUSHER_OUTBOX_POLL_INTERVAL).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 10000),
    default=100,
    show_default=True,
    help="Events claimed per cycle.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Relays in this process, sharing the work (PostgreSQL only).",
)
@click.option("--once", is_flag=True, help="Send what is due once, then exit.")
@with_appcontext
def relay(poll_interval: float | None, limit: int, threads: int, once: bool) -> None:
    """Send the outbox's committed events to Pusher until SIGTERM or Ctrl-C.

    Events leave in order per channel, 10 to a batch_events request; failures
    are retried with backoff, refusals set aside. Several relays may run: on
    PostgreSQL they share the work (also --threads in one process), elsewhere
    one works at a time.
    """
    outbox = _outbox()
    runners = [outbox.make_relay(limit=limit) for _ in range(threads)]
    runner = runners[0]
    if threads > 1 and not runner.skip_locked:
        raise click.UsageError(
            "--threads needs PostgreSQL: on this database one relay works at a time."
        )
    if once:
        while runner.run_once():
            pass
        click.echo(json.dumps(dataclasses.asdict(runner.stats)))
        return
    if not logging.getLogger("flask_pusher").handlers and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    interval = outbox.settings.outbox_poll_interval if poll_interval is None else poll_interval
    click.echo(f"Relaying the outbox of {current_app.name} (Ctrl-C or SIGTERM to stop).", err=True)
    workers = [
        threading.Thread(target=r.run, args=(stop, None, interval), name=f"relay-{n}")
        for n, r in enumerate(runners[1:], 1)
    ]
    try:
        for worker in workers:
            worker.start()
        runner.run(stop, None, interval)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    totals = {
        name: sum(getattr(r.stats, name) for r in runners)
        for name in dataclasses.asdict(runner.stats)
    }
    click.echo(f"Relay stopped: {json.dumps(totals)}", err=True)


@click.command("outbox")
@with_appcontext
def status() -> None:
    """Print the outbox's backlog, the age of its oldest event and the events set aside (JSON)."""
    outbox = _outbox()
    click.echo(json.dumps(dataclasses.asdict(outbox.make_relay().status())))
