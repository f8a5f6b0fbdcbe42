"""flask-pusher.js in headless Chromium: a page's XMLHttpRequest and fetch carry
X-Socket-ID once pusher-js is connected, and ``to_others=True`` leaves that page
out of the delivery while another page gets the event (reference §4.2)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask import render_template_string
from flask import request

from flask_pusher import Pusher

from ..serving import serve_http
from .test_chat import browser  # noqa: F401  (the module-scoped Chromium fixture)
from .test_chat import TIMEOUT_MS

PAGE = """<!doctype html>
<title>to others</title>
{{ pusher_script() }}
<script>
  window.seen = [];
  const pusher = new Pusher({{ PUSHER_KEY|tojson }}, {{ pusher_options() }});
  const channel = pusher.subscribe("room");
  channel.bind("said", (data) => window.seen.push(data.by));
  channel.bind("pusher:subscription_succeeded", () => { window.subscribed = true; });
  function xhr(path) {
    return new Promise((resolve) => {
      const request = new XMLHttpRequest();
      request.open("POST", path);
      request.onload = () => resolve(JSON.parse(request.responseText));
      request.send();
    });
  }
  async function viaFetch(path) {
    return (await fetch(path, { method: "POST" })).json();
  }
</script>
"""


@pytest.fixture
def app_url(pusher_config: dict[str, Any]) -> Iterator[str]:
    app = Flask(__name__)
    app.config.update(pusher_config)
    pusher = Pusher(app)

    @app.get("/")
    def page() -> str:
        return render_template_string(PAGE)

    @app.post("/say/<by>")
    def say(by: str) -> dict[str, Any]:
        pusher.trigger("room", "said", {"by": by}, to_others=True)
        return {"x_socket_id": request.headers.get("X-Socket-ID")}

    with serve_http(app) as url:
        yield url


def test_a_page_is_left_out_of_its_own_to_others_trigger(
    browser: Any,  # noqa: F811
    app_url: str,
) -> None:
    pages = []
    for _ in range(2):
        context = browser.new_context(base_url=app_url)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto("/")
        page.wait_for_function("window.subscribed === true")
        pages.append(page)
    a, b = pages
    socket_id = a.evaluate("pusher.connection.socket_id")
    assert a.evaluate("FlaskPusher.socketId()") == socket_id
    # a posts with XMLHttpRequest: b gets it, a does not.
    assert a.evaluate("xhr('/say/a-xhr')") == {"x_socket_id": socket_id}
    b.wait_for_function("window.seen.includes('a-xhr')")
    # a posts with fetch, then b posts: a sees only b's, which came after its own.
    assert a.evaluate("viaFetch('/say/a-fetch')") == {"x_socket_id": socket_id}
    b.wait_for_function("window.seen.includes('a-fetch')")
    b.evaluate("viaFetch('/say/b')")
    a.wait_for_function("window.seen.includes('b')")
    assert a.evaluate("window.seen") == ["b"]
    for page in pages:
        page.context.close()
