"""The webhook view is exempted from Flask-WTF's ``CSRFProtect`` through its
public ``exempt`` (issue 15 item 5), not by editing ``app.before_request_funcs``,
which Flask documents as internal."""

from __future__ import annotations

from flask import Flask

from flask_pusher import Pusher
from flask_pusher import views

from .conftest import APP_ID
from .conftest import KEY
from .conftest import SECRET


def _app() -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="dev", PUSHER_APP_ID=APP_ID, PUSHER_KEY=KEY, PUSHER_SECRET=SECRET)
    return app


def test_exempted_at_init_app_when_csrfprotect_came_first() -> None:
    from flask_wtf.csrf import CSRFProtect

    app = _app()
    csrf = CSRFProtect(app)
    assert "flask_pusher.views.webhook_view" not in csrf._exempt_views
    Pusher(app)
    # CSRFProtect's own record, before any request.
    assert "flask_pusher.views.webhook_view" in csrf._exempt_views
    # Nothing was slipped in before CSRFProtect's check for this.
    assert views.exempt_webhooks_from_csrf not in app.before_request_funcs[None]


def test_registered_with_before_request_when_csrfprotect_comes_later() -> None:
    from flask_wtf.csrf import CSRFProtect

    app = _app()
    Pusher(app)
    CSRFProtect(app)
    funcs = app.before_request_funcs[None]
    check = next(f for f in funcs if f.__name__ == "csrf_protect")
    # Appended through app.before_request: it runs before CSRFProtect's check.
    assert funcs.index(views.exempt_webhooks_from_csrf) < funcs.index(check)
