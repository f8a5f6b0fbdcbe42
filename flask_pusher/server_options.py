"""Every option of the server, declared once.

:class:`ServerOptions` is the one declaration, as uvicorn's ``Config`` and
gunicorn's ``settings.py`` are: each field has its name, type and default, and
its :class:`Spec` (in the field's metadata) says its command line flag, its
extension config key, its environment variable, its range and its help.
Everything else is derived from it:

- :class:`~flask_pusher.server.app.Server`,
  :class:`~flask_pusher.server.LocalServer` and :func:`~flask_pusher.server.run`
  take the fields as keyword arguments (``ServerOptions(**kwargs)``: an
  unknown name raises :class:`TypeError`);
- :func:`flask_pusher.server.cli.server_options` makes one click option per
  field with a ``flag`` (``python -m flask_pusher.server`` and ``flask pusher
  serve``), and :class:`CommandLineOptions` is what it passes on;
- the extension's ``PUSHER_SERVER_*`` settings (:mod:`flask_pusher.settings`)
  are the fields with a ``config_key``, named ``server_<field>``.

The options of where to listen (``--host``, ``--port``, ``--webhook``,
``--debug``) are not the server's but the command line's: :data:`LISTEN`
declares them. Like :mod:`flask_pusher.names`, this module imports neither
Flask nor aiohttp nor click, so that both halves can read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one option appears outside Python.

    :param help: the one-line help of the command line and the docs.
    :param flag: the command line flag (``"--metrics-prefix"``), or ``None``
        when the option is Python's only. A boolean's flag may be a pair
        (``"--metrics/--no-metrics"``).
    :param config_key: the extension's config key (``PUSHER_SERVER_*``), or ``None``.
    :param envvar: the environment variable the command line reads, or ``None``.
    :param bounds: the inclusive ``(low, high)`` range of a number, or ``None``.
    :param metavar: the value's name in ``--help``, or ``None``.
    :param dest: the Python name of a flag whose name differs (``--redis`` is
        ``redis_url``), filled in from the field.
    :param choices: the values a text option takes, or ``None`` (any).
    """

    help: str
    flag: str | None = None
    config_key: str | None = None
    envvar: str | None = None
    bounds: tuple[float, float] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    name: str = ""
    default: Any = None
    type: str = ""


def _option(default: Any, help: str, **spec: Any) -> Any:
    return dataclasses.field(default=default, metadata={"spec": Spec(help, **spec)})


#: Seconds ``channel_vacated`` and ``member_removed`` webhooks are held back
#: (https://pusher.com/docs/channels/server_api/webhooks/: "delayed by a few seconds").
DEFAULT_WEBHOOK_DELAY = 3.0
#: Seconds before the first webhook retry, doubled after each failure.
DEFAULT_WEBHOOK_BACKOFF = 1.0
#: Seconds after which a failing webhook is dropped (Pusher retries for 5 minutes).
DEFAULT_WEBHOOK_RETRY_FOR = 300.0
#: The default start of every metric name (soketi's is ``soketi_``).
DEFAULT_METRICS_PREFIX = "pusher_"
#: The start of the cluster's Redis keys and pub/sub channels.
DEFAULT_REDIS_PREFIX = "flask-pusher"
#: Seconds before the other nodes of a cluster take a silent node for dead.
DEFAULT_NODE_TIMEOUT = 30.0
#: The inclusive range of ``node_timeout``, in seconds.
NODE_TIMEOUT_RANGE = (1.0, 300.0)
#: The event loops the server runs on (``loop``): ``auto`` is uvloop when it
#: is installed (the ``server`` extra installs it where it has wheels), else
#: asyncio's own.
LOOPS = ("auto", "asyncio", "uvloop")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """The options of a running server: the keyword arguments of
    :class:`~flask_pusher.server.app.Server`,
    :class:`~flask_pusher.server.LocalServer` and :func:`~flask_pusher.server.run`.

    :param webhook_delay: seconds ``channel_vacated`` and ``member_removed``
        webhooks are held back (https://pusher.com/docs/channels/server_api/webhooks/:
        "delayed by a few seconds"). Default 3.0; tests use less.
    :param webhook_backoff: seconds before the first webhook retry, doubled
        after each failure. Default 1.0.
    :param webhook_retry_for: seconds after which a failing webhook is dropped.
        Default 300.0.
    :param tick_interval: seconds between heartbeat checks (pings, 4201
        closes) and throttled subscription counts. Default 1.0.
    :param metrics: count and serve Prometheus metrics at ``/metrics``.
        Default ``True`` (``--no-metrics``).
    :param metrics_prefix: the start of every metric name. Default
        ``"pusher_"`` (``--metrics-prefix``).
    :param metrics_port: serve ``/metrics``, ``/health`` and ``/ready`` on this
        port, on the same interface, instead of the main port. Default ``None``
        (``--metrics-port``).
    :param node: this server process's name, the ``node`` label of the metrics
        and in console events. Default ``None``: ``HOSTNAME:PORT`` (``--node``).
    :param console: serve the debug console at ``/console``. Default ``False``
        (``--console``).
    :param console_allow_hosts: ``Host`` names the console takes as this
        machine, besides ``127.0.0.1``, ``[::1]`` and ``localhost``. Default
        none (``--console-allow-host``, ``PUSHER_SERVER_CONSOLE_ALLOW_HOSTS``).
    :param trusted_proxies: IP addresses or networks of proxies whose
        ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed. Default
        none (``--trusted-proxy``).
    :param shutdown_delay: seconds between the start of a shutdown and the end
        of listening, while ``/ready`` already answers 503. Default 0.0
        (``--shutdown-delay``).
    :param redis_url: join the cluster of every server with this Redis URL and
        ``redis_prefix`` (``redis://HOST:PORT/DB``, ``rediss://`` or
        ``unix://``; needs the ``redis`` extra). Default ``None``: serve alone,
        nothing of Redis imported (``--redis``, environment variable and config
        key ``PUSHER_SERVER_REDIS_URL``).
    :param redis_prefix: the start of the cluster's Redis keys and pub/sub
        channels. Default ``"flask-pusher"`` (``--redis-prefix``,
        ``PUSHER_SERVER_REDIS_PREFIX``).
    :param node_timeout: seconds, from 1 to 300, after which the other nodes of
        a cluster take a silent node for dead and remove its connections.
        Default 30.0 (``--node-timeout``).
    :param loop: the event loop of :func:`~flask_pusher.server.run`, its
        workers and :class:`~flask_pusher.server.LocalServer`'s thread, one of
        :data:`LOOPS`: ``"uvloop"`` (https://github.com/MagicStack/uvloop),
        ``"asyncio"`` (the standard library's), or ``"auto"``, the default:
        uvloop when it can be imported, else asyncio's (``--loop``,
        ``PUSHER_SERVER_LOOP``). A :class:`~flask_pusher.server.app.Server`
        made by hand runs on the loop it is given.
    :raises TypeError: for an unknown option name.
    :raises ValueError: for a ``loop`` not in :data:`LOOPS`.
    """

    webhook_delay: float = _option(
        DEFAULT_WEBHOOK_DELAY, "Seconds vacated/member_removed webhooks are held."
    )
    webhook_backoff: float = _option(
        DEFAULT_WEBHOOK_BACKOFF, "Seconds before the first webhook retry."
    )
    webhook_retry_for: float = _option(
        DEFAULT_WEBHOOK_RETRY_FOR, "Seconds a failing webhook is retried."
    )
    tick_interval: float = _option(1.0, "Seconds between heartbeat checks.")
    metrics: bool = _option(
        True, "Count and serve Prometheus metrics at /metrics.", flag="--metrics/--no-metrics"
    )
    metrics_prefix: str = _option(
        DEFAULT_METRICS_PREFIX,
        "Start of every metric name (soketi's is soketi_).",
        flag="--metrics-prefix",
    )
    metrics_port: int | None = _option(
        None,
        "Serve /metrics, /health and /ready on this port (same interface) instead.",
        flag="--metrics-port",
        bounds=(1, 65535),
    )
    node: str | None = _option(
        None,
        "This process's name in metrics and the console. [default: HOSTNAME:PORT]",
        flag="--node",
        metavar="NAME",
    )
    console: bool = _option(
        False,
        "Serve the debug console at /console (asks for an app secret off loopback).",
        flag="--console",
    )
    console_allow_hosts: tuple[str, ...] = _option(
        (),
        "A Host name the console takes as this machine (repeatable), besides"
        " 127.0.0.1, [::1] and localhost.",
        flag="--console-allow-host",
        config_key="PUSHER_SERVER_CONSOLE_ALLOW_HOSTS",
        metavar="HOST",
    )
    trusted_proxies: tuple[str, ...] = _option(
        (),
        "IP address or network of a proxy whose X-Forwarded-For and"
        " X-Forwarded-Proto are believed (repeatable).",
        flag="--trusted-proxy",
        metavar="ADDRESS",
    )
    shutdown_delay: float = _option(
        0.0,
        "On SIGTERM, answer 503 on /ready this long before closing.",
        flag="--shutdown-delay",
        bounds=(0, 600),
        metavar="SECONDS",
    )
    redis_url: str | None = _option(
        None,
        "Join the cluster of every server with this Redis URL and prefix,"
        " e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS, unix:///PATH).",
        flag="--redis",
        config_key="PUSHER_SERVER_REDIS_URL",
        envvar="PUSHER_SERVER_REDIS_URL",
        metavar="URL",
    )
    redis_prefix: str = _option(
        DEFAULT_REDIS_PREFIX,
        "Start of the cluster's Redis keys and pub/sub channels.",
        flag="--redis-prefix",
        config_key="PUSHER_SERVER_REDIS_PREFIX",
    )
    node_timeout: float = _option(
        DEFAULT_NODE_TIMEOUT,
        "With --redis: how long before the other nodes treat a silent node as dead.",
        flag="--node-timeout",
        bounds=NODE_TIMEOUT_RANGE,
        metavar="SECONDS",
    )
    loop: str = _option(
        "auto",
        "Event loop: uvloop, asyncio, or auto (uvloop when installed).",
        flag="--loop",
        config_key="PUSHER_SERVER_LOOP",
        envvar="PUSHER_SERVER_LOOP",
        choices=LOOPS,
    )

    def __post_init__(self) -> None:
        if self.loop not in LOOPS:
            raise ValueError(f"loop must be one of {', '.join(LOOPS)}, not {self.loop!r}.")


@dataclasses.dataclass(frozen=True)
class CommandLineOptions(ServerOptions):
    """What the command line passes on (:func:`flask_pusher.server.cli.serve`):
    the server's options and ``workers``, the number of server processes of
    :func:`~flask_pusher.server.run` (``--workers``, default 1)."""

    workers: int = _option(
        1,
        "Run N server processes on the same port (SO_REUSEPORT); needs --redis.",
        flag="--workers",
        bounds=(1, 256),
        metavar="N",
    )

    def kwargs(self) -> dict[str, Any]:
        """The options the command line sets, as keyword arguments of
        :func:`~flask_pusher.server.run` (all but ``workers``): the others
        keep the server's defaults."""
        return {s.name: getattr(self, s.name) for s in specs(ServerOptions) if s.flag is not None}


#: The command line's own options, before the server's: ``--host`` (loopback
#: only by default), ``--port`` (0 picks a free port), ``--webhook URL``
#: (repeatable) and ``--debug``.
LISTEN: tuple[Spec, ...] = (
    Spec("Interface to listen on.", "--host", name="host", default="127.0.0.1", type="str"),
    Spec(
        "TCP port; 0 picks a free one.",
        "--port",
        bounds=(0, 65535),
        name="port",
        default=6001,
        type="int",
    ),
    Spec(
        "Send webhooks to URL (repeatable), e.g. http://127.0.0.1:5000/pusher/events.",
        "--webhook",
        metavar="URL",
        name="webhooks",
        default=(),
        type="tuple[str, ...]",
    ),
    Spec(
        "Log one line per connection event and HTTP API request (with its request id).",
        "--debug",
        name="debug",
        default=False,
        type="bool",
    ),
)
#: The per-app limits (:ref:`server-limits`) the command line sets for the app
#: of ``--app-id``/``--key``/``--secret`` (``python -m flask_pusher.server``)
#: and the extension's ``PUSHER_SERVER_APP_LIMITS`` mapping takes: each is the
#: :class:`~flask_pusher.server.AppConfig` field of its ``name``. A default of
#: ``None`` or ``()`` leaves the field at ``AppConfig``'s own default.
APP_LIMITS: tuple[Spec, ...] = (
    Spec(
        "Close one more connection of the app with 4004. [default: no quota]",
        "--max-connections",
        bounds=(1, 10_000_000),
        metavar="N",
        name="max_connections",
        type="int | None",
    ),
    Spec(
        "Close one more connection from one client address with 4004. [default: no cap]",
        "--max-connections-per-address",
        bounds=(1, 10_000_000),
        metavar="N",
        name="max_connections_per_address",
        type="int | None",
    ),
    Spec(
        "An Origin host allowed to connect (repeatable, *.example.com, *);"
        " others are closed with 4009. [default: any]",
        "--allowed-origin",
        metavar="HOST",
        name="allowed_origins",
        default=(),
        type="tuple[str, ...]",
    ),
    Spec(
        "Channels one connection may subscribe to. [default: 1000]",
        "--max-subscriptions-per-connection",
        bounds=(1, 10_000_000),
        metavar="N",
        name="max_subscriptions_per_connection",
        type="int | None",
    ),
    Spec(
        "A connection's subscribes and unsubscribes per second. [default: 100]",
        "--max-subscription-changes-per-second",
        bounds=(1, 10_000_000),
        metavar="N",
        name="max_subscription_changes_per_second",
        type="int | None",
    ),
    Spec(
        "HTTP API events per second, then 429. [default: no limit]",
        "--max-backend-events-per-second",
        bounds=(1, 10_000_000),
        metavar="N",
        name="max_backend_events_per_second",
        type="int | None",
    ),
    Spec(
        "HTTP API reads per second, then 429. [default: no limit]",
        "--max-read-requests-per-second",
        bounds=(1, 10_000_000),
        metavar="N",
        name="max_read_requests_per_second",
        type="int | None",
    ),
    Spec(
        "Close a connection that has not signed in within --user-authentication-timeout with 4009.",
        "--authorized-connections",
        name="authorized_connections",
        default=False,
        type="bool",
    ),
    Spec(
        "Seconds a connection has to sign in under --authorized-connections. [default: 30]",
        "--user-authentication-timeout",
        bounds=(0.1, 86400),
        metavar="SECONDS",
        name="user_authentication_timeout",
        type="float | None",
    ),
)

#: The default interface of :func:`~flask_pusher.server.run` and the command line.
DEFAULT_HOST: str = LISTEN[0].default
#: The default port of :func:`~flask_pusher.server.run` and the command line.
DEFAULT_PORT: int = LISTEN[1].default


def specs(cls: type[ServerOptions] = CommandLineOptions) -> Iterator[Spec]:
    """Each field's :class:`Spec` of ``cls``, in declaration order, with its
    ``name``, ``default`` and ``type`` (the annotation's text) filled in."""
    for field in dataclasses.fields(cls):
        spec: Spec = field.metadata["spec"]
        yield dataclasses.replace(
            spec, name=field.name, default=field.default, type=str(field.type)
        )
