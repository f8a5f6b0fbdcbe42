"""``PUSHER_*`` configuration: keys, defaults, coercion and precedence.

Settings are resolved once, in :meth:`flask_pusher.Pusher.init_app`, into a frozen
:class:`PusherSettings`. The precedence is, highest first::

    init_app(**kwargs) > Pusher(**kwargs) > app.config["PUSHER_*"] > defaults

``PUSHER_URL`` (``http(s)://KEY:SECRET@HOST[:PORT]/apps/APP_ID``, as Pusher's add-ons
set it) fills in the app id, key, secret, host, port and TLS setting that are not
given on their own at any level.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import secrets
import warnings
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote
from urllib.parse import urlsplit

from werkzeug.utils import import_string
from werkzeug.utils import ImportStringError

from .errors import ConfigurationError
from .server_options import APP_LIMITS
from .server_options import DEFAULT_PORT
from .server_options import DEFAULT_REDIS_PREFIX
from .server_options import LOOPS
from .server_options import ServerOptions
from .server_options import specs

_MISSING: Any = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclasses.dataclass(frozen=True)
class PusherSettings:
    """The settings of one app, resolved by ``init_app``.

    Frozen: later changes to ``app.config`` are not seen. The ``repr`` hides the
    secret and the encryption master key. Each field's config key is
    ``"PUSHER_" + name.upper()``, except ``auth_path``, ``user_auth_path`` and
    ``webhooks_path`` (``PUSHER_AUTH``, ``PUSHER_USER_AUTH``, ``PUSHER_WEBHOOKS``);
    see :doc:`/configuration`.
    """

    app_id: str
    key: str
    secret: str = dataclasses.field(repr=False)
    cluster: str | None = None
    ssl: bool = True
    host: str | None = None
    port: int | None = None
    timeout: float = 5
    backend: type[Any] | None = None
    backend_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    json_encoder: type[json.JSONEncoder] | None = None
    json_decoder: type[json.JSONDecoder] | None = None
    encryption_master_key_base64: str | None = dataclasses.field(default=None, repr=False)
    encryption_master_key: str | None = dataclasses.field(default=None, repr=False)
    url_prefix: str = "/pusher"
    auth_path: str = "/auth"
    user_auth_path: str = "/user-auth"
    webhooks_path: str = "/events"
    webhook_tolerance: float = 300
    webhook_max_bytes: int = 1024 * 1024
    auth_batch_limit: int = 100
    auth_jsonp: bool = False
    defer: bool = False
    local_server: bool = False
    local_server_port: int = DEFAULT_PORT
    server_redis_url: str | None = dataclasses.field(default=None, repr=False)
    server_redis_prefix: str = DEFAULT_REDIS_PREFIX
    server_console_allow_hosts: tuple[str, ...] = ()
    server_loop: str = "auto"
    server_app_limits: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    after_commit: bool = False
    outbox: bool = False
    outbox_relay_thread: bool = False
    outbox_poll_interval: float = 1.0
    outbox_retry_max: float = 30.0
    outbox_retention: float = 3600.0

    @property
    def encryption_enabled(self) -> bool:
        """Whether an encryption master key is set, so encrypted channels work."""
        return bool(self.encryption_master_key_base64 or self.encryption_master_key)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`pusher.Pusher`."""
        return {
            "app_id": self.app_id,
            "key": self.key,
            "secret": self.secret,
            "ssl": self.ssl,
            "host": self.host,
            "port": self.port,
            "timeout": self.timeout,
            "cluster": self.cluster,
            "encryption_master_key": self.encryption_master_key,
            "encryption_master_key_base64": self.encryption_master_key_base64,
            "json_encoder": self.json_encoder,
            "json_decoder": self.json_decoder,
            "backend": self.backend,
            **self.backend_options,
        }


# --- coercion: values from the environment arrive as strings -----------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None or value == "" else _text(value)


def _hosts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("a list of host names, or one string of names separated by commas")
    return tuple(v.strip().lower() for v in value if v.strip())


def _loop(value: Any) -> str:
    if value not in LOOPS:
        raise ValueError(f"one of {', '.join(map(repr, LOOPS))}")
    return str(value)


def _app_id(value: Any) -> str:
    value = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]+", value):
        raise ValueError("a string of digits, such as '1234'")
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("a boolean, or one of 'true', 'false', '1', '0', 'yes', 'no'")


def _number(kind: type[int] | type[float], low: float, high: float) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a number")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(f"a number from {low:g} to {high:g}") from None
        if not low <= number <= high:
            raise ValueError(f"a number from {low:g} to {high:g}")
        return number

    return coerce


def _optional_port(value: Any) -> int | None:
    if value is None or value == "":
        return None
    port: int = _number(int, 1, 65535)(value)
    return port


def _redis_url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("a Redis URL such as 'redis://127.0.0.1:6379/0'")
    from .server.config import hide_password  # no aiohttp, no redis
    from .server.config import REDIS_URL_FORMS
    from .server.config import redis_url_problem

    problem = redis_url_problem(value)
    if problem:
        raise ValueError(f"{REDIS_URL_FORMS}; {hide_password(value)!r} is not ({problem})")
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"(/[^/?#\s]+)+", value):
        raise ValueError("a URL path that starts with '/', such as '/auth'")
    return value


def _prefix(value: Any) -> str:
    if value in ("", "/", None):
        return ""
    return _path(value.rstrip("/") if isinstance(value, str) else value)


def _import(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)  # "package.module.Name" or "package.module:Name"
    except (ImportStringError, ValueError):
        raise ValueError(f"an importable dotted path, {value!r} cannot be imported") from None


def _optional_class(value: Any) -> type[Any] | None:
    if value is None or value == "":
        return None
    obj = _import(value)
    if not isinstance(obj, type):
        raise ValueError("a class or the dotted import path of a class")
    return obj


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("a dict or a JSON object") from None
    if not isinstance(value, Mapping):
        raise ValueError("a dict or a JSON object")
    return dict(value)


def _app_limits(value: Any) -> Mapping[str, Any]:
    limits = dict(_mapping(value))
    known = {spec.name for spec in APP_LIMITS}
    unknown = sorted(set(limits) - known)
    if unknown:
        raise ValueError(
            f"a mapping of the app's limits: {', '.join(map(repr, unknown))} is none of"
            f" {', '.join(sorted(known))}"
        )
    for name, item in limits.items():
        spec = next(s for s in APP_LIMITS if s.name == name)
        if item is None:
            continue  # AppConfig's None: no limit (or any origin)
        if spec.type == "bool":
            limits[name] = _bool(item)
        elif spec.type.startswith("tuple"):
            if isinstance(item, str) or not all(isinstance(i, str) and i for i in item):
                raise ValueError(f"{name}: a list of host patterns such as ['*.example.com']")
            limits[name] = tuple(item)
        else:
            number = float if spec.type.startswith("float") else int
            assert spec.bounds is not None
            limits[name] = _number(number, *spec.bounds)(item)
    return limits


#: How the extension coerces the server options that have a config key
#: (:class:`~flask_pusher.server_options.ServerOptions`), by option name.
_SERVER_COERCE: dict[str, Callable[[Any], Any]] = {
    "redis_url": _redis_url,
    "redis_prefix": _text,
    "console_allow_hosts": _hosts,
    "loop": _loop,
}


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its keyword name, config key, default and coercion."""

    name: str
    config_key: str
    default: Any
    coerce: Callable[[Any], Any]


#: Every setting, in the order of the configuration docs.
OPTIONS: tuple[Option, ...] = (
    Option("app_id", "PUSHER_APP_ID", _MISSING, _app_id),
    Option("key", "PUSHER_KEY", _MISSING, _text),
    Option("secret", "PUSHER_SECRET", _MISSING, _text),
    Option("cluster", "PUSHER_CLUSTER", None, _optional_text),
    Option("ssl", "PUSHER_SSL", True, _bool),
    Option("host", "PUSHER_HOST", None, _optional_text),
    Option("port", "PUSHER_PORT", None, _optional_port),
    Option("timeout", "PUSHER_TIMEOUT", 5, _number(float, 0.001, 3600)),
    Option("backend", "PUSHER_BACKEND", None, _optional_class),
    Option("backend_options", "PUSHER_BACKEND_OPTIONS", None, _mapping),
    Option("json_encoder", "PUSHER_JSON_ENCODER", None, _optional_class),
    Option("json_decoder", "PUSHER_JSON_DECODER", None, _optional_class),
    Option(
        "encryption_master_key_base64",
        "PUSHER_ENCRYPTION_MASTER_KEY_BASE64",
        None,
        _optional_text,
    ),
    Option("encryption_master_key", "PUSHER_ENCRYPTION_MASTER_KEY", None, _optional_text),
    Option("url_prefix", "PUSHER_URL_PREFIX", "/pusher", _prefix),
    Option("auth_path", "PUSHER_AUTH", "/auth", _path),
    Option("user_auth_path", "PUSHER_USER_AUTH", "/user-auth", _path),
    Option("webhooks_path", "PUSHER_WEBHOOKS", "/events", _path),
    Option("webhook_tolerance", "PUSHER_WEBHOOK_TOLERANCE", 300, _number(float, 0, 86400)),
    Option("webhook_max_bytes", "PUSHER_WEBHOOK_MAX_BYTES", 1024 * 1024, _number(int, 1, 2**31)),
    Option("auth_batch_limit", "PUSHER_AUTH_BATCH_LIMIT", 100, _number(int, 1, 10000)),
    Option("auth_jsonp", "PUSHER_AUTH_JSONP", False, _bool),
    Option("defer", "PUSHER_DEFER", False, _bool),
    Option("local_server", "PUSHER_LOCAL_SERVER", False, _bool),
    Option("local_server_port", "PUSHER_LOCAL_SERVER_PORT", DEFAULT_PORT, _number(int, 1, 65535)),
    # PUSHER_SERVER_*: the server's options that have a config key, named server_<option>.
    *(
        Option(f"server_{spec.name}", spec.config_key, spec.default, _SERVER_COERCE[spec.name])
        for spec in specs(ServerOptions)
        if spec.config_key is not None
    ),
    Option("server_app_limits", "PUSHER_SERVER_APP_LIMITS", None, _app_limits),
    Option("after_commit", "PUSHER_AFTER_COMMIT", False, _bool),
    Option("outbox", "PUSHER_OUTBOX", False, _bool),
    Option("outbox_relay_thread", "PUSHER_OUTBOX_RELAY_THREAD", False, _bool),
    Option("outbox_poll_interval", "PUSHER_OUTBOX_POLL_INTERVAL", 1.0, _number(float, 0.01, 3600)),
    Option("outbox_retry_max", "PUSHER_OUTBOX_RETRY_MAX", 30.0, _number(float, 0.01, 86400)),
    Option("outbox_retention", "PUSHER_OUTBOX_RETENTION", 3600.0, _number(float, 0, 31 * 86400)),
)

#: The credentials an in-process local server uses when none are configured:
#: a secret drawn at random once per process, so that no published secret
#: signs its webhooks, channel authorizations or HTTP API requests.
LOCAL_DEFAULTS = {"app_id": "1", "key": "flask-pusher-local", "secret": secrets.token_hex(20)}
#: What the in-process local server sets, whatever the config says.
LOCAL_OVERRIDES = {"host": "127.0.0.1", "ssl": False}

#: Keyword options that are not fields: ``url`` is split into its parts.
EXTRA_OPTIONS = {"url": "PUSHER_URL"}

#: Keys the old Flask-Pusher read for Pusher's Push Notifications, which
#: pusher-http-python 3 no longer has (it moved to Pusher Beams). Ignored with a warning.
OBSOLETE_KEYS = ("PUSHER_NOTIFICATION_HOST", "PUSHER_NOTIFICATION_SSL")

KEYWORDS = frozenset(o.name for o in OPTIONS) | frozenset(EXTRA_OPTIONS)
#: Settings whose value an error message does not repeat (a URL with a password).
_HIDDEN = frozenset({"server_redis_url"})
_BY_NAME = {o.name: o for o in OPTIONS}
#: Every ``PUSHER_*`` key the extension reads.
CONFIG_KEYS = (
    frozenset(o.config_key for o in OPTIONS)
    | frozenset(EXTRA_OPTIONS.values())
    | frozenset(OBSOLETE_KEYS)
)


def _did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt ``name``, if one is close enough."""
    normalized = {k.replace("_", "").lower(): k for k in known}
    same = normalized.get(name.replace("_", "").lower())  # PUSHER_APPID, pusher_app_id
    if same is not None:
        return same
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    return close[0] if close else None


def check_keywords(options: Mapping[str, Any], where: str) -> None:
    """Raise :class:`TypeError` for a keyword that is not a setting."""
    unknown = sorted(set(options) - KEYWORDS)
    if unknown:
        hints = [
            f" Did you mean {hint}= instead of {name}=?"
            for name in unknown
            if (hint := _did_you_mean(name, KEYWORDS))
        ]
        raise TypeError(
            f"{where} got unknown keyword option(s) {', '.join(unknown)}.{''.join(hints)}"
            f" Known options: {', '.join(sorted(KEYWORDS))}."
        )


def misspelt_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """The ``PUSHER_*`` keys of ``config`` that look like a misspelt setting.

    :returns: ``{misspelt key: the setting's key}``, for example
        ``{"PUSHER_APPID": "PUSHER_APP_ID"}``. Other unknown ``PUSHER_*`` keys
        (an app's own) are left out.
    """
    found = {}
    for key in config:
        if isinstance(key, str) and key.upper().startswith("PUSHER_") and key not in CONFIG_KEYS:
            hint = _did_you_mean(key, CONFIG_KEYS)
            if hint is not None:
                found[key] = hint
    return found


def parse_url(url: str) -> dict[str, Any]:
    """Split ``http(s)://KEY:SECRET@HOST[:PORT]/apps/APP_ID`` into settings.

    :raises ValueError: when ``url`` is not of that form.
    """
    parts = urlsplit(url.strip())
    match = re.fullmatch(r"/apps/([0-9]+)/?", parts.path)
    if parts.scheme not in ("http", "https") or not match:
        raise ValueError("of the form 'https://KEY:SECRET@HOST/apps/APP_ID'")
    if not parts.username or not parts.password or not parts.hostname:
        raise ValueError("of the form 'https://KEY:SECRET@HOST/apps/APP_ID'")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("a URL whose port is a number from 1 to 65535") from None
    values: dict[str, Any] = {
        "app_id": match.group(1),
        "key": unquote(parts.username),
        "secret": unquote(parts.password),
        "host": parts.hostname,
        "ssl": parts.scheme == "https",
    }
    if port is not None:
        values["port"] = port
    return values


def _describe(option_name: str, config_key: str) -> str:
    return f"{config_key} (keyword {option_name}=)"


def resolve(
    config: Mapping[str, Any],
    constructor_options: Mapping[str, Any],
    init_options: Mapping[str, Any],
) -> PusherSettings:
    """Resolve one app's settings.

    :param config: the app's ``app.config``.
    :param constructor_options: keyword options given to ``Pusher(...)``.
    :param init_options: keyword options given to ``init_app(...)``.
    :raises ConfigurationError: a required setting is missing or a value is malformed.
    """

    def lookup(name: str, config_key: str) -> Any:
        for layer in (init_options, constructor_options):
            if name in layer:
                return layer[name]
        return config.get(config_key, _MISSING)

    for key in OBSOLETE_KEYS:
        if config.get(key) not in (None, ""):
            warnings.warn(
                f"{key} is ignored: pusher-http-python 3 has no Push Notifications"
                " (they moved to Pusher Beams). Remove it from the config.",
                DeprecationWarning,
                stacklevel=4,
            )

    typos = misspelt_keys(config)
    for typo, key in typos.items():
        if key in config:
            continue
        warnings.warn(
            f"app.config[{typo!r}] is not a Flask-Pusher setting and is ignored:"
            f" did you mean {key}?",
            UserWarning,
            stacklevel=4,
        )

    from_url: dict[str, Any] = {}
    url = lookup("url", "PUSHER_URL")
    if url is not _MISSING and url not in (None, ""):
        try:
            from_url = parse_url(_text(url))
        except ValueError as e:
            raise ConfigurationError(
                f"{_describe('url', 'PUSHER_URL')} must be {e}, got {url!r}."
            ) from None

    local = lookup("local_server", "PUSHER_LOCAL_SERVER")
    local = local is not _MISSING and _bool_or_error(local)
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = lookup(option.name, option.config_key)
        if raw is _MISSING:
            raw = from_url.get(option.name, option.default)
        if raw is _MISSING and local:
            raw = LOCAL_DEFAULTS[option.name]
        if raw is _MISSING:
            misspelt = [k for k, v in typos.items() if v == option.config_key]
            raise ConfigurationError(
                f"{option.config_key} is not set."
                + (f" {misspelt[0]} is set: did you mean {option.config_key}?" if misspelt else "")
                + f" Set app.config[{option.config_key!r}] (or PUSHER_URL), or pass"
                f" {option.name}= to Pusher() or init_app(). The app id, key and secret"
                " are on your app's 'App Keys' page in the Pusher dashboard. With no"
                " Pusher account, set PUSHER_LOCAL_SERVER = True: the app then runs a"
                " local Pusher-compatible server in its own process and needs no"
                " credentials."
            )
        try:
            values[option.name] = option.coerce(raw)
        except ValueError as e:
            got = "" if option.name in _HIDDEN else f", got {raw!r}"
            raise ConfigurationError(
                f"{_describe(option.name, option.config_key)} must be {e}{got}."
            ) from None
    if values["local_server"]:
        values.update(LOCAL_OVERRIDES, port=values["local_server_port"])
    if values["encryption_master_key"] and values["encryption_master_key_base64"]:
        raise ConfigurationError(
            "Set only PUSHER_ENCRYPTION_MASTER_KEY_BASE64; PUSHER_ENCRYPTION_MASTER_KEY"
            " is the deprecated raw form of the same key."
        )
    return PusherSettings(**values)


def _bool_or_error(value: Any) -> bool:
    try:
        return _bool(value)
    except ValueError as e:
        raise ConfigurationError(
            f"{_describe('local_server', 'PUSHER_LOCAL_SERVER')} must be {e}, got {value!r}."
        ) from None


def config_key_for(name: str) -> str:
    """The ``PUSHER_*`` config key of keyword option ``name``."""
    return EXTRA_OPTIONS.get(name) or _BY_NAME[name].config_key
