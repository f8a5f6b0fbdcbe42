"""Signature checks: WebSocket ``auth`` strings
(https://pusher.com/docs/channels/library_auth_reference/auth-signatures/) and
HTTP API requests
(https://pusher.com/docs/channels/library_auth_reference/rest-api/#authentication)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import datetime
from datetime import timezone
from typing import Any

import pusher.signature

from .config import AppConfig
from .errors import APIError

#: Accepted skew of ``auth_timestamp``, in seconds.
TIMESTAMP_WINDOW = 600
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


def check_auth(app: AppConfig, auth: Any, string_to_sign: str) -> str | None:
    """Check ``auth == KEY:HMAC(string_to_sign)`` in constant time.

    :returns: ``None`` when valid, else an error message.
    """
    if not isinstance(auth, str) or not auth:
        return f"Missing auth: expected '{app.key}:<HMAC SHA256 of {string_to_sign!r}>'"
    key, _, signature = auth.partition(":")
    try:
        expected = pusher.signature.sign(app.secret, string_to_sign)
        key_ok = hmac.compare_digest(key.encode(), app.key.encode())
        if key_ok and hmac.compare_digest(signature.encode(), expected.encode()):
            return None
    except UnicodeEncodeError:  # a lone surrogate (a JSON "\ud800" escape): nobody signed it
        pass
    return (
        f"Invalid signature: expected HMAC SHA256 hex digest of {string_to_sign!r}, "
        f"but got {auth!r}"
    )


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_request(
    app: AppConfig,
    method: str,
    paths: tuple[str, ...],
    query: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> None:
    """Check an HTTP API request's signature.

    :param paths: the request path as candidates (decoded, then raw); the
        signature may cover either.
    :param query: the *decoded* query parameters (a multidict: every
        repeat of a name is an item).
    :param body: the raw body bytes, hashed as received.
    :param now: Unix time in seconds, for tests.
    :raises APIError: 401 for a wrong key, timestamp, body hash or
        signature; 400 for missing or malformed parameters, and for a
        parameter given twice (in any case): the string to sign has one value
        per name (reference §4.3), so which one the signature covered and
        which one the operation reads could differ.
    """
    now = time.time() if now is None else now
    params: dict[str, str] = {}
    for name, value in query.items():
        lower = name.lower()
        if lower in params:
            raise APIError(400, f"Repeated query parameter {name[:60]!r}: send each once")
        params[lower] = value
    for name in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
        if name not in params:
            raise APIError(401, f"Missing {name} query parameter")
    if not hmac.compare_digest(params["auth_key"].encode(), app.key.encode()):
        raise APIError(401, "Unknown auth_key")
    if params["auth_version"] != "1.0":
        raise APIError(401, "auth_version must be 1.0")
    try:
        timestamp = int(params["auth_timestamp"])
    except ValueError:
        raise APIError(401, "auth_timestamp must be an integer") from None
    # Compare in integers: a huge auth_timestamp must not overflow a float.
    if abs(int(now) - timestamp) > TIMESTAMP_WINDOW:
        # A date only for timestamps a datetime can hold (years 1 to 9999).
        given = _iso(timestamp) if -62e9 < timestamp < 253e9 else str(timestamp)[:40]
        raise APIError(
            401,
            f"Timestamp expired: Given timestamp ({given}) not within "
            f"{TIMESTAMP_WINDOW}s of server time ({_iso(now)})",
        )
    body_md5 = params.get("body_md5")
    if body:
        if body_md5 is None:
            raise APIError(401, "body_md5 is required for a request with a body")
        if body_md5 != hashlib.md5(body).hexdigest():
            raise APIError(401, "body_md5 does not match the MD5 of the body")
    elif body_md5 is not None and body_md5 != EMPTY_MD5:
        raise APIError(401, "body_md5 does not match the MD5 of the empty body")
    signed = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "auth_signature")
    given = params["auth_signature"]
    for path in dict.fromkeys(paths):
        string_to_sign = f"{method.upper()}\n{path}\n{signed}"
        expected = pusher.signature.sign(app.secret, string_to_sign)
        if hmac.compare_digest(given.encode(), expected.encode()):
            return
    string_to_sign = f"{method.upper()}\n{paths[0]}\n{signed}"
    raise APIError(
        401,
        f'Invalid signature: you should have sent HmacSHA256Hex("{string_to_sign}", '
        f'your_secret_key), but you sent "{given}"',
    )
