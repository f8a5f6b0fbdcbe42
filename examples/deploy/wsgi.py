"""The example chat as gunicorn serves it behind nginx (docs/deploying.rst)::

    gunicorn --bind 127.0.0.1:8000 examples.deploy.wsgi:app

Settings come from the environment: ``FLASK_*`` and ``PUSHER_*`` variables, which
systemd reads from ``/etc/chat/chat.env`` (``examples/deploy/chat.env``).
"""

from werkzeug.middleware.proxy_fix import ProxyFix

from examples.chat import create_app

app = create_app()
# nginx, the one proxy in front, sets X-Forwarded-For and X-Forwarded-Proto:
# trust one hop of each, so request.remote_addr is the client's address and
# request.scheme is "https" (secure cookies, url_for(..., _external=True)).
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
