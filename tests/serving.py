"""A Flask app over real HTTP, for clients that cannot use the test client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from werkzeug.serving import make_server


@contextmanager
def serve_http(app: Flask) -> Iterator[str]:
    """Serve ``app`` with werkzeug on a free port of 127.0.0.1, in a thread.

    Yields the base URL, ``http://127.0.0.1:PORT``; shuts the server down after.
    """
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(10)
