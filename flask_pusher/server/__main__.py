"""``python -m flask_pusher.server``: see :func:`flask_pusher.server.cli.main`."""

from .cli import main

if __name__ == "__main__":
    main()
