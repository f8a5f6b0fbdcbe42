"""Log lines a client cannot forge, and a ``Server`` header that names no version.

A request path, a channel name or a close reason may hold control characters
(``%0A`` in a path decodes to a newline): written raw, one request makes what
looks like several log lines. :class:`EscapeControls`, on each of the
server's loggers, writes the message with those characters escaped
(``\\n`` as ``\\x0a``), after every other filter.
"""

from __future__ import annotations

import logging

#: The server's loggers (records propagate to their parents' handlers, but
#: filters apply only where a record is made).
LOGGERS = (
    "flask_pusher.server",
    "flask_pusher.server.http",
    "flask_pusher.server.webhooks",
    "flask_pusher.server.cluster",
)
#: What the ``Server`` response header says: no aiohttp or Python version.
SERVER_HEADER = "flask-pusher"

_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_controls(text: str) -> str:
    """``text`` with C0 and C1 control characters (and the Unicode line and
    paragraph separators) written as escapes."""
    return text.translate(_ESCAPES)


class EscapeControls(logging.Filter):
    """Formats each record's message with its control characters escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken call: leave it to the handler to report
            return True
        escaped = escape_controls(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def install() -> None:
    """Put :class:`EscapeControls` last on each of :data:`LOGGERS` (once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, EscapeControls) for f in logger.filters):
            logger.addFilter(EscapeControls())


def hide_aiohttp_version() -> None:
    """Make every answer of the server's aiohttp sites say :data:`SERVER_HEADER`.

    aiohttp takes the default ``Server`` header of every response (its own
    answers to malformed requests too, sent before any route or signal runs)
    from the module global ``aiohttp.web_response.SERVER_SOFTWARE``; this sets
    it for the process (its aiohttp servers only: the client's ``User-Agent``
    is another name), at no cost per response. A test fails if a newer
    aiohttp moves it.
    """
    from aiohttp import web_response

    setattr(web_response, "SERVER_SOFTWARE", SERVER_HEADER)  # noqa: B010 (not exported)
