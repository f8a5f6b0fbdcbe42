"""``python -m flask_pusher.server``: serve one app from options, or many
from a JSON file (``{"apps": [{"app_id", "key", "secret", "webhooks":
[{"url", "event_types"}], ...}]}``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .config import AppConfig
from .config import WebhookConfig
from .serve import run


def load_config(path: str) -> list[AppConfig]:
    """Read apps from a JSON file.

    Each app object takes the :class:`AppConfig` fields; ``webhooks`` is a list
    of ``{"url": ..., "event_types": [...]}`` objects.

    :raises ValueError: if the file is not valid JSON or an app is invalid.
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


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[AppConfig]]:
    """Parse the command line into options and apps (exits on usage errors)."""
    parser = argparse.ArgumentParser(
        prog="python -m flask_pusher.server",
        description="Run a local Pusher Channels server (WebSocket and HTTP API on one port).",
    )
    parser.add_argument("--app-id", help="app ID of the single app to serve")
    parser.add_argument("--key", help="app key")
    parser.add_argument("--secret", help="app secret")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=6001, help="default: 6001 (0 = any free)")
    parser.add_argument(
        "--webhook", action="append", default=[], metavar="URL", help="webhook URL (repeatable)"
    )
    parser.add_argument("--config", metavar="FILE", help='JSON file: {"apps": [...]}')
    parser.add_argument("--debug", action="store_true", help="log every connection event")
    args = parser.parse_args(argv)
    apps: list[AppConfig] = []
    try:
        if args.config:
            apps.extend(load_config(args.config))
        given = [args.app_id, args.key, args.secret]
        if any(given):
            if not all(given):
                parser.error("--app-id, --key and --secret go together")
            hooks = [WebhookConfig(url) for url in args.webhook]
            apps.append(AppConfig(args.app_id, args.key, args.secret, webhooks=hooks))
        elif args.webhook:
            parser.error("--webhook needs --app-id, --key and --secret")
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    if not apps:
        parser.error("give --app-id, --key and --secret, or --config FILE")
    return args, apps


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m flask_pusher.server``."""
    args, apps = parse_args(argv)
    try:
        run(apps, args.host, args.port, debug=args.debug)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
