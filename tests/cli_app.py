"""A tiny app for the CLI tests: ``flask --app tests.cli_app pusher ...``."""

from flask import Flask

from flask_pusher import Pusher

app = Flask(__name__)
app.config.update(PUSHER_APP_ID="7", PUSHER_KEY="cli-key", PUSHER_SECRET="cli-secret")
app.config.from_prefixed_env()  # FLASK_PUSHER_SERVER_APP_LIMITS='{...}' in a test
pusher = Pusher(app)
