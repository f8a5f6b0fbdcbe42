"""The chat example in a real browser: two users in headless Chromium.

Debian's ``chromium`` (``/usr/bin/chromium``), driven by Playwright for Python
with that executable: Playwright's own browser downloads are never used. The
example app is served over real HTTP by werkzeug in a thread, with the local
Pusher server in-process on a free port, and no request may leave 127.0.0.1.

Without Chromium or Playwright the test is skipped, except when the environment
variable ``CI`` is set: then it fails, so that CI cannot pass without it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from examples.chat import create_app
from flask_pusher import local

from ..needs import unavailable
from ..serving import serve_http

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Every host name but 127.0.0.1 fails to resolve: a second fence around the network.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
TIMEOUT_MS = 15_000
LOCAL_HOSTS = {"127.0.0.1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def chat_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example app over HTTP on 127.0.0.1, on the in-process local server."""
    for name in list(os.environ):
        if name.startswith(("PUSHER_", "FLASK_")):
            monkeypatch.delenv(name)
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "browser-test",
            "PUSHER_LOCAL_SERVER": True,
            "PUSHER_LOCAL_SERVER_PORT": _free_port(),
        }
    )
    try:
        with serve_http(app) as url:
            yield url
    finally:
        local.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is missing: pip install -e . --group browser (pip >= 25.1).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class User:
    """One person: a browser context of their own (so a session cookie of their
    own), one page, and a record of what the page asked of the network."""

    def __init__(
        self, browser: Any, base_url: str, name: str, width: int = 1280, height: int = 900
    ) -> None:
        self.name = name
        self.blocked: list[str] = []  # requests for anything but 127.0.0.1
        self.requested: list[str] = []  # every http(s) and ws(s) URL
        self.frames: list[str] = []  # WebSocket frames received
        self.errors: list[str] = []  # uncaught JavaScript errors
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": width, "height": height}
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requested.append(request.url))
        self.page.on("websocket", self._on_websocket)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _guard(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")

    def _on_websocket(self, ws: Any) -> None:
        self.requested.append(ws.url)
        ws.on("framereceived", lambda payload: self.frames.append(str(payload)))

    def sign_in(self) -> None:
        from playwright.sync_api import expect

        self.page.goto("/")
        self.page.fill("#name", self.name)
        self.page.click("text=Join the chat")
        expect(self.page.locator("#me")).to_have_text(self.name)
        expect(self.page.locator("#state")).to_have_text("connected")

    def send(self, form: str, text: str) -> None:
        self.page.fill(f"{form} input[name=text]", text)
        self.page.press(f"{form} input[name=text]", "Enter")

    def outside_requests(self) -> list[str]:
        hosts = [
            url
            for url in self.requested
            if urlsplit(url).scheme in ("http", "https", "ws", "wss")
            and urlsplit(url).hostname not in LOCAL_HOSTS
        ]
        return self.blocked + hosts


def screenshot(user: User, path: Path) -> None:
    user.page.screenshot(path=str(path), full_page=True)
    print(f"screenshot of {user.name}'s page: {path}")


def test_two_users_chat(browser: Any, chat_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    alice = User(browser, chat_url, "alice")
    bob = User(browser, chat_url, "bob")
    alice.sign_in()
    bob.sign_in()
    a, b = alice.page, bob.page

    # Presence: each sees both.
    for page in (a, b):
        expect(page.locator('#members [data-user="alice"]')).to_be_visible()
        expect(page.locator('#members [data-user="bob"]')).to_be_visible()

    # send_to_user after pusher.signin(): the welcome notification.
    expect(a.locator("#notifications")).to_contain_text("Welcome, alice!")
    expect(b.locator("#notifications")).to_contain_text("Welcome, bob!")

    # Typing: client events on the presence channel, shown to the other user.
    a.locator("#message-form input[name=text]").press_sequentially("Hello from alice")
    expect(b.locator("#typing")).to_have_text("alice is typing…")
    screenshot(bob, tmp_path / "chat-bob-typing.png")
    expect(a.locator("#typing")).to_have_text("")

    # A room message: POST, then the server's trigger reaches everyone.
    a.press("#message-form input[name=text]", "Enter")
    expect(b.locator("#messages")).to_contain_text("alice Hello from alice")
    expect(a.locator("#messages")).to_contain_text("alice Hello from alice")
    expect(b.locator("#typing")).to_have_text("")

    # A direct message on private-dm-alice-bob, once both ends have it open,
    # and the notification that comes with it.
    expect(a.locator('#dm-to option[value="bob"]')).to_have_count(1)
    expect(b.locator('#dm-to option[value="alice"]')).to_have_count(1)
    bob.send("#dm-form", "psst, alice")
    expect(a.locator("#dm-log")).to_contain_text("bob → alice psst, alice")
    expect(b.locator("#dm-log")).to_contain_text("bob → alice psst, alice")
    expect(a.locator("#notifications")).to_contain_text("bob sent you a direct message.")

    # The encrypted room: decrypted in the page, only ciphertext on the wire.
    secret = "the eagle lands at noon"
    alice.send("#secret-form", secret)
    expect(b.locator("#secret-log")).to_contain_text(f"alice {secret}")
    expect(a.locator("#secret-log")).to_contain_text(f"alice {secret}")
    frames = [f for f in bob.frames if '"private-encrypted-room"' in f and '"message"' in f]
    assert frames and all("ciphertext" in f and secret not in f for f in frames), frames

    # Webhooks, recorded by the app and pushed to the activity log.
    occupied = a.locator('#activity [data-event="channel_occupied"]')
    expect(occupied.filter(has_text="presence-room")).to_have_count(1)
    expect(
        a.locator('#activity [data-event="member_added"]').filter(has_text="bob")
    ).to_be_visible()

    for user in (alice, bob):
        screenshot(user, tmp_path / f"chat-{user.name}.png")

    # Bob leaves: alice's presence list drops him, and the (3 s delayed)
    # member_removed webhook reaches the activity log.
    bob.context.close()
    expect(a.locator('#members [data-user="bob"]')).to_have_count(0)
    expect(a.locator('#dm-to option[value="bob"]')).to_have_count(0)
    removed = a.locator('#activity [data-event="member_removed"]').filter(has_text="bob")
    expect(removed).to_be_visible()

    assert alice.outside_requests() == [] and bob.outside_requests() == []
    assert alice.errors == [] and bob.errors == []
    alice.context.close()


PHONE = {"width": 390, "height": 844}  # an iPhone 12 to 15's CSS pixels


def horizontal_overflow(page: Any) -> int:
    """How many CSS pixels the page is wider than the window (0: no sideways scroll)."""
    overflow: int = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return overflow


def test_on_a_phone_with_typing_cleared_and_nobody_to_message(
    browser: Any, chat_url: str, tmp_path: Path
) -> None:
    # Issue 10 item 5: 390 px without sideways scrolling, "is typing…" cleared with
    # the sender's text, and a DM recipient list that says when nobody else is online.
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    alice = User(browser, chat_url, "alice", **PHONE)
    a = alice.page
    a.goto("/")
    assert horizontal_overflow(a) == 0
    alice.sign_in()
    expect(a.locator('#members [data-user="alice"]')).to_be_visible()
    expect(a.locator("#dm-to")).to_have_text("Nobody else is online")
    expect(a.locator("#dm-to")).to_be_disabled()
    expect(a.locator("#dm-form button")).to_be_disabled()
    screenshot(alice, tmp_path / "chat-phone-alone.png")
    assert horizontal_overflow(a) == 0

    bob = User(browser, chat_url, "bob", **PHONE)
    bob.sign_in()
    b = bob.page
    expect(a.locator("#dm-to")).to_have_text("bob")
    expect(a.locator("#dm-to")).to_be_enabled()
    expect(a.locator("#dm-form button")).to_be_enabled()

    # Long unbroken words and a full activity log stay within the width.
    bob.send("#message-form", "x" * 300)
    expect(a.locator("#messages")).to_contain_text("x" * 300)

    # bob types, then clears his text: alice's "is typing…" goes with it, well
    # before the 3 s after which it would fade by itself.
    b.locator("#message-form input[name=text]").press_sequentially("hi")
    expect(a.locator("#typing")).to_have_text("bob is typing…")
    b.fill("#message-form input[name=text]", "")
    expect(a.locator("#typing")).to_have_text("", timeout=1500)
    # and typing again shows it again at once (the 2 s throttle starts over).
    b.locator("#message-form input[name=text]").press_sequentially("again")
    expect(a.locator("#typing")).to_have_text("bob is typing…", timeout=1500)

    screenshot(alice, tmp_path / "chat-phone-alice.png")
    for page in (a, b):
        assert horizontal_overflow(page) == 0

    bob.context.close()
    expect(a.locator("#dm-to")).to_have_text("Nobody else is online")
    expect(a.locator("#dm-form button")).to_be_disabled()
    assert alice.errors == [] and bob.errors == []
    assert alice.outside_requests() == []
    alice.context.close()


@pytest.mark.parametrize("size", [{"width": 1280, "height": 900}, PHONE], ids=["1280", "390"])
def test_the_debug_console_link_sits_in_the_page_s_layout(
    browser: Any, chat_url: str, size: dict[str, int]
) -> None:
    # Issue 14 item 3: the link was flush against the window's left edge, outside
    # the cards. Its footer now lines up with the cards above it, on the sign-in
    # page (the form's card) and the chat page (the grid's outer columns).
    alice = User(browser, chat_url, "alice", **size)
    a = alice.page

    def edges(selector: str) -> tuple[float, float]:
        box = a.locator(selector).first.bounding_box()
        assert box is not None, selector
        return box["x"], box["x"] + box["width"]

    def footer_lines_up_with(left: str, right: str) -> None:
        footer_left, footer_right = edges("footer")
        assert footer_left == pytest.approx(edges(left)[0], abs=1)
        assert footer_right == pytest.approx(edges(right)[1], abs=1)
        link_left, link_right = edges("#debug-console")
        assert footer_left + 4 <= link_left < link_right <= footer_right
        # A card: the page's own background, not the body's.
        assert a.evaluate(
            "getComputedStyle(document.querySelector('footer')).backgroundColor"
        ) == a.evaluate(
            "getComputedStyle(document.querySelector('.signin, section')).backgroundColor"
        )

    a.goto("/")
    footer_lines_up_with("main.signin", "main.signin")
    alice.sign_in()
    footer_lines_up_with("#online-panel", "#dm-panel")
    assert horizontal_overflow(a) == 0
    alice.context.close()
