"""A tiny app for the CLI tests: ``flask --app tests.cli_app pusher ...``."""

from flask import Flask

from flask_pusher import Pusher

app = Flask(__name__)
app.config.update(PUSHER_APP_ID="7", PUSHER_KEY="cli-key", PUSHER_SECRET="cli-secret")
pusher = Pusher(app)
