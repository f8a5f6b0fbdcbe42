"""The app of the ``flask pusher listen`` tests: its ``PUSHER_*`` config comes
from the environment the test gives the command."""

import os

from flask import Flask

from flask_pusher import Pusher

app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("PUSHER_")})
pusher = Pusher(app)
