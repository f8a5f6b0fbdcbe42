"""The server's command line, written once with click.

:func:`main` is ``python -m flask_pusher.server``: one app from ``--app-id``,
``--key`` and ``--secret``, or many from ``--config FILE``. ``flask pusher serve``
(:mod:`flask_pusher.cli`) is the same command with the Flask app's credentials:
both take the options of :func:`server_options` and start the server with
:func:`serve`. Importing this module does not import aiohttp.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

import click

from .config import AppConfig
from .config import check_prefix
from .config import WebhookConfig

F = TypeVar("F", bound=Callable[..., Any])


def server_options(f: F) -> F:
    """Add the options every way of starting the server takes:

    - ``--host`` (default ``127.0.0.1``, loopback only),
    - ``--port`` (default 6001; 0 picks a free port),
    - ``--webhook URL`` (repeatable): where the app's webhooks go,
    - ``--debug``: log one line per connection event and HTTP API request,
    - ``--no-metrics``, ``--metrics-prefix`` (default ``pusher_``),
      ``--metrics-port``: Prometheus metrics at ``/metrics``,
    - ``--node NAME``: this process's name in metrics and the console
      (default ``HOSTNAME:PORT``),
    - ``--console``: the debug console at ``/console``,
    - ``--shutdown-delay SECONDS`` (default 0): answer 503 on ``/ready`` that
      long before closing.

    The decorated function takes ``host``, ``port``, ``webhooks``, ``debug``
    and ``ops`` (an :class:`OpsOptions`).
    """
    options = [
        click.option(
            "--host", default="127.0.0.1", show_default=True, help="Interface to listen on."
        ),
        click.option(
            "--port",
            default=6001,
            show_default=True,
            type=click.IntRange(0, 65535),
            help="TCP port; 0 picks a free one.",
        ),
        click.option(
            "--webhook",
            "webhooks",
            multiple=True,
            metavar="URL",
            help="Send webhooks to URL (repeatable), e.g. http://127.0.0.1:5000/pusher/events.",
        ),
        click.option(
            "--debug",
            is_flag=True,
            help="Log one line per connection event and HTTP API request (with its request id).",
        ),
        click.option(
            "--metrics/--no-metrics",
            default=True,
            show_default=True,
            help="Count and serve Prometheus metrics at /metrics.",
        ),
        click.option(
            "--metrics-prefix",
            default="pusher_",
            show_default=True,
            help="Start of every metric name (soketi's is soketi_).",
        ),
        click.option(
            "--metrics-port",
            type=click.IntRange(1, 65535),
            default=None,
            help="Serve /metrics, /health and /ready on this port (same interface) instead.",
        ),
        click.option(
            "--node",
            default=None,
            metavar="NAME",
            help="This process's name in metrics and the console. [default: HOSTNAME:PORT]",
        ),
        click.option(
            "--console",
            is_flag=True,
            help="Serve the debug console at /console (asks for an app secret off loopback).",
        ),
        click.option(
            "--shutdown-delay",
            type=click.FloatRange(0, 600),
            default=0.0,
            show_default=True,
            metavar="SECONDS",
            help="On SIGTERM, answer 503 on /ready this long before closing.",
        ),
    ]
    for option in reversed(options):
        f = option(f)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        names = ("metrics", "metrics_prefix", "metrics_port", "node", "console", "shutdown_delay")
        kwargs["ops"] = OpsOptions(**{name: kwargs.pop(name) for name in names})
        return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class OpsOptions:
    """The operations options of :func:`server_options`, as
    :class:`~flask_pusher.server.LocalServer` and :func:`~flask_pusher.server.run`
    take them as keyword arguments (same names and defaults)."""

    metrics: bool = True
    metrics_prefix: str = "pusher_"
    metrics_port: int | None = None
    node: str | None = None
    console: bool = False
    shutdown_delay: float = 0.0

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments."""
        return dataclasses.asdict(self)


def serve(
    apps: Sequence[AppConfig],
    host: str,
    port: int,
    debug: bool,
    ops: OpsOptions | None = None,
) -> None:
    """Run the server in the foreground until SIGINT or SIGTERM.

    :raises click.ClickException: if the address cannot be bound, or the
        ``server`` extra (aiohttp) is not installed.
    :raises click.UsageError: for a metrics prefix that cannot start a metric name.
    """
    try:
        from .serve import run
    except ImportError as e:
        raise click.ClickException(
            f'The server needs its extra: pip install "flask-pusher[server]" ({e}).'
        ) from None
    options = (ops or OpsOptions()).kwargs()
    try:
        check_prefix(options["metrics_prefix"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        run(apps, host, port, debug=debug, **options)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None


def load_config(path: str) -> list[AppConfig]:
    """Read apps from a JSON file ``{"apps": [{...}, ...]}``.

    Each app object takes the :class:`AppConfig` fields; ``webhooks`` is a list
    of URLs or ``{"url": ..., "event_types": [...]}`` objects.

    :raises ValueError: if the file is not valid JSON or an app is invalid.
    :raises OSError: if the file cannot be read.
    """
    with open(path, encoding="utf-8") as f:
        try:
            document = json.load(f)
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("apps"), list):
        raise ValueError(f'{path}: expected {{"apps": [...]}}')
    return [_app(item, path) for item in document["apps"]]


def _app(item: Any, path: str) -> AppConfig:
    if not isinstance(item, dict):
        raise ValueError(f"{path}: each app must be an object")
    options = dict(item)
    hooks = []
    webhooks = options.pop("webhooks", []) or []
    if not isinstance(webhooks, list):
        raise ValueError(f"{path}: webhooks must be a list")
    for hook in webhooks:
        if isinstance(hook, str):
            hook = {"url": hook}
        if not isinstance(hook, dict) or "url" not in hook:
            raise ValueError(
                f'{path}: each webhook must be a URL or {{"url": ..., "event_types": [...]}}'
            )
        types = hook.get("event_types")
        if types is not None and not isinstance(types, list):
            raise ValueError(f"{path}: event_types must be a list")
        hooks.append(WebhookConfig(hook["url"], frozenset(types) if types else None))
    try:
        return AppConfig(**options, webhooks=hooks)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None


def apps_from_options(
    app_id: str | None,
    key: str | None,
    secret: str | None,
    config: str | None,
    webhooks: Sequence[str],
) -> list[AppConfig]:
    """The apps the command line names.

    :raises click.UsageError: for incomplete credentials, ``--webhook``
        without them, a bad config file, or no app at all.
    """
    apps: list[AppConfig] = []
    try:
        if config:
            apps.extend(load_config(config))
        given = [app_id, key, secret]
        if any(given):
            if not (app_id and key and secret):
                raise click.UsageError("--app-id, --key and --secret go together")
            hooks = [WebhookConfig(url) for url in webhooks]
            apps.append(AppConfig(app_id, key, secret, webhooks=hooks))
        elif webhooks:
            raise click.UsageError("--webhook needs --app-id, --key and --secret")
    except (OSError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if not apps:
        raise click.UsageError("give --app-id, --key and --secret, or --config FILE")
    return apps


@click.command(
    "python -m flask_pusher.server",
    help="Run a Pusher Channels server: WebSocket and HTTP API on one port.",
)
@click.option(
    "--app-id", envvar="PUSHER_APP_ID", show_envvar=True, help="App ID of the single app to serve."
)
@click.option("--key", envvar="PUSHER_KEY", show_envvar=True, help="App key.")
@click.option(
    "--secret",
    envvar="PUSHER_SECRET",
    show_envvar=True,
    help="App secret (from the environment, it stays out of the process list).",
)
@click.option(
    "--config",
    metavar="FILE",
    help='JSON file of apps: {"apps": [{"app_id", "key", "secret", "webhooks", ...}]}.',
)
@server_options
def main(
    app_id: str | None,
    key: str | None,
    secret: str | None,
    config: str | None,
    host: str,
    port: int,
    webhooks: tuple[str, ...],
    debug: bool,
    ops: OpsOptions,
) -> None:
    """Entry point of ``python -m flask_pusher.server``."""
    serve(apps_from_options(app_id, key, secret, config, webhooks), host, port, debug, ops)
