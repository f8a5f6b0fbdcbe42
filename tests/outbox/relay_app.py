"""The app ``flask pusher relay`` runs in the outbox tests' subprocesses.

``OUTBOX_DATABASE_URI`` names the database, ``OUTBOX_PUSHER_PORT`` the local
server; ``OUTBOX_SLOW_SEND`` (seconds) makes the relay print ``SENT`` after each
HTTP API request and wait before it records the outcome, so that a test can
kill it in the middle of a batch.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_pusher import Pusher
from flask_pusher.testing import TEST_APP_ID
from flask_pusher.testing import TEST_KEY
from flask_pusher.testing import TEST_SECRET

db = SQLAlchemy()
app = Flask(__name__)
app.config.update(
    SQLALCHEMY_DATABASE_URI=os.environ["OUTBOX_DATABASE_URI"],
    PUSHER_APP_ID=TEST_APP_ID,
    PUSHER_KEY=TEST_KEY,
    PUSHER_SECRET=TEST_SECRET,
    PUSHER_HOST="127.0.0.1",
    PUSHER_PORT=int(os.environ["OUTBOX_PUSHER_PORT"]),
    PUSHER_SSL=False,
    PUSHER_OUTBOX=True,
    PUSHER_OUTBOX_POLL_INTERVAL=0.05,
    PUSHER_OUTBOX_RETRY_MAX=1.0,
)
db.init_app(app)
pusher = Pusher(app)

slow = float(os.environ.get("OUTBOX_SLOW_SEND", "0") or 0)
if slow:
    with app.app_context():
        http = pusher.client._pusher_client.http
    send = http.send_request
    pause = threading.Event()

    def slow_send(request: Any) -> Any:
        result = send(request)
        print("SENT", flush=True)  # the test kills the process after this line
        pause.wait(slow)
        return result

    http.send_request = slow_send
