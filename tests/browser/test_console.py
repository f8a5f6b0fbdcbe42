"""The server's debug console in a real browser (issue 9 item 3).

Debian's Chromium driven by Playwright, as in test_chat.py (whose fixtures and
``User`` this module uses): two users chat through pusher-js 8 in the example
app on the in-process local server while a third page watches its console, the
filters and the state view follow, and an event sent from the event creator
reaches the chat. A second test checks that a server listening beyond loopback
asks for an app's secret first. Screenshots are saved in the test's tmp_path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask_pusher.server import AppConfig
from flask_pusher.server import LocalServer

from .test_chat import browser  # noqa: F401 (the fixture)
from .test_chat import chat_url  # noqa: F401 (the fixture)
from .test_chat import screenshot
from .test_chat import TIMEOUT_MS
from .test_chat import User


def rows(page: Any, kind: str) -> Any:
    return page.locator(f'#events tr[data-type="{kind}"]')


def test_console_follows_a_chat_filters_shows_state_and_creates_events(
    browser: Any,  # noqa: F811
    chat_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    alice = User(browser, chat_url, "alice")
    alice.sign_in()
    console_url = alice.page.locator("#debug-console").get_attribute("href")
    assert console_url is not None and console_url.endswith("/console")
    watcher = User(browser, console_url, "console")
    c = watcher.page
    c.goto(console_url)
    expect(c.locator("#status")).to_have_text("live")
    expect(c.locator("#logout-form")).to_be_hidden()  # loopback: no login
    # The state view already knows alice and her presence membership.
    expect(c.locator('#state tr[data-channel="presence-room"]')).to_contain_text("1")
    expect(c.locator("#state .members")).to_contain_text("alice")

    bob = User(browser, chat_url, "bob")
    bob.sign_in()
    expect(rows(c, "connection")).to_have_count(1)
    expect(rows(c, "signin")).to_contain_text("bob")
    expect(rows(c, "member_added").filter(has_text="presence-room")).to_contain_text("bob")
    expect(rows(c, "subscribed").filter(has_text="presence-room")).to_have_count(1)
    connection = rows(c, "connection").first
    expect(connection).to_contain_text("protocol 7")
    expect(connection).to_contain_text("Chrome")

    # A client event (typing) and an API message (a room message).
    alice.page.locator("#message-form input[name=text]").press_sequentially("hi bob")
    expect(rows(c, "client_event")).to_contain_text("client-typing")
    alice.page.press("#message-form input[name=text]", "Enter")
    expect(bob.page.locator("#messages")).to_contain_text("alice hi bob")
    message = rows(c, "api_message").filter(has_text="room").filter(has_text="message to room")
    expect(message.first).to_be_visible()

    # Each row opens its full payload.
    message.first.click()
    expect(c.locator("#detail")).to_contain_text('"text": "hi bob"')
    expect(c.locator("#state .members")).to_contain_text("bob")
    screenshot(watcher, tmp_path / "console-live.png")

    # Filters: by type, by channel, by user; pause.
    c.select_option("#filter-type", "client_event")
    expect(c.locator("#events tr")).to_have_count(rows(c, "client_event").count())
    expect(c.locator('#events tr:not([data-type="client_event"])')).to_have_count(0)
    c.select_option("#filter-type", "")
    c.fill("#filter-user", "bob")
    expect(c.locator("#events tr").first).to_contain_text("bob")
    for text in c.locator("#events tr").all_inner_texts():
        assert "bob" in text, text
    c.fill("#filter-user", "")
    c.fill("#filter-channel", "presence-room")
    expect(rows(c, "api_message")).to_have_count(0)  # the message went to "room"
    c.fill("#filter-channel", "")
    c.click("#pause")
    expect(c.locator("#pause")).to_have_text("Resume")
    shown = c.locator("#events tr").count()
    bob.page.locator("#message-form input[name=text]").press_sequentially("x")
    bob.page.press("#message-form input[name=text]", "Enter")
    expect(alice.page.locator("#messages")).to_contain_text("bob x")
    assert c.locator("#events tr").count() == shown  # paused
    c.click("#pause")
    expect(rows(c, "api_message").filter(has_text="message to room")).to_have_count(2)

    # The event creator: through Core.trigger, to the chat's room.
    c.fill("#creator-channel", "room")
    c.fill("#creator-event", "message")
    c.fill("#creator-data", '{"from": "console", "text": "<b>hello</b> from the console"}')
    c.click("#creator-send")
    expect(c.locator("#creator-result")).to_have_text("Sent.")
    for user in (alice, bob):
        expect(user.page.locator("#messages")).to_contain_text("<b>hello</b> from the console")
    expect(rows(c, "api_message").filter(has_text="(event creator)")).to_have_count(1)
    c.fill("#creator-data", "{not json")
    c.click("#creator-send")
    expect(c.locator("#creator-result")).to_contain_text("not valid JSON")
    screenshot(watcher, tmp_path / "console-creator.png")

    # Bob leaves: disconnection with its close code, member removed, state updated.
    bob.context.close()
    expect(rows(c, "disconnection")).to_have_count(1)
    expect(rows(c, "member_removed")).to_contain_text("bob")
    expect(c.locator("#state .members")).not_to_contain_text("bob")
    # Attacker-controlled text is shown as text: no element came from a payload.
    assert c.locator("#events b, #detail b, #state b").count() == 0
    for user in (alice, watcher):
        assert user.errors == [], user.errors
        assert user.outside_requests() == []
    alice.context.close()
    watcher.context.close()


def test_console_off_loopback_asks_for_the_secret(
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    app = AppConfig("9", "console-key", "console-secret-value")
    with LocalServer([app], host="0.0.0.0", console=True) as server:
        base = f"http://127.0.0.1:{server.port}"
        user = User(browser, base, "operator")
        page = user.page
        page.goto("/console")
        expect(page.locator("#secret")).to_be_visible()
        assert "console-secret-value" not in page.content()
        page.fill("#secret", "wrong")
        page.click("#login")
        expect(page.locator("#failed")).to_be_visible()
        screenshot(user, tmp_path / "console-login.png")
        page.fill("#secret", "console-secret-value")
        page.click("#login")
        expect(page.locator("#status")).to_have_text("live")
        expect(page.locator("#logout-form")).to_be_visible()
        expect(page.locator('#state .app[data-app="9"]')).to_be_visible()
        assert "console-secret-value" not in page.content()
        assert all("console-secret-value" not in c["value"] for c in user.context.cookies())
        page.click("#logout")
        expect(page.locator("#secret")).to_be_visible()
        assert user.errors == []
        user.context.close()
