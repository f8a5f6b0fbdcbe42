"""The server's command line, written once with click.

:func:`main` is ``python -m flask_pusher.server``: one app from ``--app-id``,
``--key`` and ``--secret``, or many from ``--config FILE``. ``flask pusher serve``
(:mod:`flask_pusher.cli`) is the same command with the Flask app's credentials:
both take the options of :func:`server_options` and start the server with
:func:`serve`. Importing this module does not import aiohttp.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

import click

from ..server_options import APP_LIMITS
from ..server_options import CommandLineOptions
from ..server_options import LISTEN
from ..server_options import Spec
from ..server_options import specs
from .access import parse_networks
from .config import AppConfig
from .config import check_prefix
from .config import check_redis_url
from .config import check_workers
from .config import WebhookConfig

F = TypeVar("F", bound=Callable[..., Any])


def server_options(f: F) -> F:
    """Add the options every way of starting the server takes, each made from
    its declaration (:data:`~flask_pusher.server_options.LISTEN` and the
    fields of :class:`~flask_pusher.server_options.CommandLineOptions` with a
    flag):

    - ``--host`` (default ``127.0.0.1``, loopback only),
    - ``--port`` (default 6001; 0 picks a free port),
    - ``--webhook URL`` (repeatable): where the app's webhooks go,
    - ``--debug``: log one line per connection event and HTTP API request,
    - ``--no-metrics``, ``--metrics-prefix`` (default ``pusher_``),
      ``--metrics-port``: Prometheus metrics at ``/metrics``,
    - ``--node NAME``: this process's name in metrics and the console
      (default ``HOSTNAME:PORT``),
    - ``--console``: the debug console at ``/console``,
    - ``--console-allow-host HOST`` (repeatable): a ``Host`` name the console
      takes as this machine, besides ``127.0.0.1``, ``[::1]`` and ``localhost``,
    - ``--trusted-proxy ADDRESS`` (repeatable): an IP address or network whose
      ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed,
    - ``--shutdown-delay SECONDS`` (default 0): answer 503 on ``/ready`` that
      long before closing,
    - ``--redis URL`` (or the environment variable ``PUSHER_SERVER_REDIS_URL``):
      join the cluster of every server with the same Redis URL and prefix,
    - ``--redis-prefix`` (default ``flask-pusher``): the start of the cluster's
      Redis keys and pub/sub channels,
    - ``--node-timeout SECONDS`` (default 30, from 1 to 300): how long the other
      nodes wait before they treat a silent node as dead,
    - ``--workers N`` (default 1): run N server processes on the same port
      (``SO_REUSEPORT``), joined through ``--redis``,
    - ``--loop LOOP`` (or ``PUSHER_SERVER_LOOP``; default ``auto``): the event
      loop, ``uvloop``, ``asyncio``, or ``auto`` (uvloop when installed).

    The decorated function takes ``host``, ``port``, ``webhooks``, ``debug``
    and ``ops`` (an :class:`OpsOptions`).
    """
    ops = [spec for spec in specs(OpsOptions) if spec.flag is not None]
    for spec in reversed((*LISTEN, *ops)):
        f = click_option(spec)(f)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["ops"] = OpsOptions(**{spec.name: kwargs.pop(spec.name) for spec in ops})
        return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def click_option(spec: Spec) -> Callable[[F], F]:
    """The click option of one declared option (its flag, type, range,
    default, environment variable and help)."""
    assert spec.flag is not None
    kwargs: dict[str, Any] = {"help": spec.help, "metavar": spec.metavar}
    if spec.type == "bool":
        kwargs["default"] = spec.default
        if "/" in spec.flag:  # --metrics/--no-metrics
            kwargs["show_default"] = True
        else:
            kwargs["is_flag"] = True
    elif spec.type.startswith("tuple"):
        kwargs["multiple"] = True
    else:
        kwargs["default"] = spec.default
        kwargs["show_default"] = spec.default is not None
        if spec.choices is not None:
            kwargs["type"] = click.Choice(spec.choices)
        number = _NUMBERS.get(spec.type.replace(" | None", ""))
        if number is not None and spec.bounds is not None:
            kwargs["type"] = number(*spec.bounds)
        if spec.envvar is not None:
            kwargs.update(envvar=spec.envvar, show_envvar=True)
    callback = _CHECKS.get(spec.name)
    if callback is not None:
        kwargs["callback"] = callback
    if "metavar" in kwargs and kwargs["metavar"] is None:
        del kwargs["metavar"]
    name = spec.flag.split("/")[0].lstrip("-").replace("-", "_")
    declarations = [spec.flag] if name == spec.name else [spec.flag, spec.name]
    return click.option(*declarations, **kwargs)


_NUMBERS: dict[str, Callable[..., Any]] = {
    "int": click.IntRange,
    "float": click.FloatRange,
}


def _redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_redis_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _networks(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    try:
        parse_networks(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _not_empty(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value:
        raise click.BadParameter("must not be empty")
    return value


#: The command line's checks of a value, by option name.
_CHECKS: dict[str, Callable[[click.Context, click.Parameter, Any], Any]] = {
    "redis_url": _redis_url,
    "redis_prefix": _not_empty,
    "trusted_proxies": _networks,
}

#: The operations and cluster options of :func:`server_options`, as
#: :func:`serve` takes them (the name of
#: :class:`~flask_pusher.server_options.CommandLineOptions` here).
OpsOptions = CommandLineOptions


def serve(
    apps: Sequence[AppConfig],
    host: str,
    port: int,
    debug: bool,
    ops: OpsOptions | None = None,
) -> None:
    """Run the server in the foreground until SIGINT or SIGTERM; with
    ``ops.workers`` > 1, run and supervise that many server processes.

    :raises click.ClickException: if the address cannot be bound, a worker
        does not start, or the ``server`` extra (aiohttp) or, with a Redis URL,
        the ``redis`` extra, or with ``--loop uvloop`` uvloop, is not installed.
    :raises click.UsageError: for a metrics prefix that cannot start a metric
        name, or ``--workers`` without ``--redis``, on port 0, or on a platform
        without ``SO_REUSEPORT``.
    """
    ops = ops or OpsOptions()
    try:
        check_prefix(ops.metrics_prefix)
        check_workers(ops.workers, port, ops.redis_url)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        from .eventloop import loop_factory
        from .serve import run
        from .serve import WorkerError
    except ImportError as e:
        raise click.ClickException(
            f'The server needs its extra: pip install "flask-pusher[server]" ({e}).'
        ) from None
    try:
        loop_factory(ops.loop)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    if ops.redis_url and importlib.util.find_spec("redis") is None:
        raise click.ClickException(
            '--redis needs redis-py: pip install "flask-pusher[server,redis]".'
        )
    try:
        run(apps, host, port, debug=debug, workers=ops.workers, **ops.kwargs())
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    except WorkerError as exc:
        raise click.ClickException(str(exc)) from None


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


def app_limits(f: F) -> F:
    """Add the per-app limits' options of
    :data:`~flask_pusher.server_options.APP_LIMITS` (``--max-connections N``,
    ``--allowed-origin HOST``, ...) to a click command; the decorated function
    takes ``limits``: the ``AppConfig`` fields given, by name (an option left
    at its default is left out: the field keeps ``AppConfig``'s default)."""
    for spec in reversed(APP_LIMITS):
        f = click_option(spec)(f)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {spec.name: kwargs.pop(spec.name) for spec in APP_LIMITS}
        kwargs["limits"] = {name: v for name, v in given.items() if v not in (None, (), False)}
        return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def apps_from_options(
    app_id: str | None,
    key: str | None,
    secret: str | None,
    config: str | None,
    webhooks: Sequence[str],
    limits: dict[str, Any] | None = None,
) -> list[AppConfig]:
    """The apps the command line names.

    :param limits: ``AppConfig`` fields (:func:`app_limits`) for the app of
        ``--app-id``/``--key``/``--secret``.
    :raises click.UsageError: for incomplete credentials, ``--webhook`` or a
        limit without them, a bad config file or limit, or no app at all.
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
            apps.append(AppConfig(app_id, key, secret, webhooks=hooks, **(limits or {})))
        elif webhooks:
            raise click.UsageError("--webhook needs --app-id, --key and --secret")
        elif limits:
            flags = ", ".join(s.flag or "" for s in APP_LIMITS if s.name in limits)
            raise click.UsageError(
                f"{flags}: the limits apply to the app of --app-id, --key and --secret;"
                " set them per app in the --config FILE instead"
            )
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
@app_limits
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
    limits: dict[str, Any],
) -> None:
    """Entry point of ``python -m flask_pusher.server``."""
    apps = apps_from_options(app_id, key, secret, config, webhooks, limits)
    serve(apps, host, port, debug, ops)
