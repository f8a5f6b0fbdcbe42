"""Runnable example apps for Flask-Pusher; see ``examples/chat``."""
