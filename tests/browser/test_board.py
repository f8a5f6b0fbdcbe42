"""The board example in a real browser (issue 17): two pages in headless Chromium
see each other's changes through model broadcasting (TaskCreated, TaskUpdated,
TaskDeleted on private-board), sent by the outbox's relay thread to the
in-process local server (reference §5.8)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.board import create_app
from flask_pusher import local

from ..serving import serve_http
from .test_chat import _free_port
from .test_chat import browser  # noqa: F401 - the module-scoped fixture
from .test_chat import TIMEOUT_MS
from .test_chat import User


@pytest.fixture
def board_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    for name in list(os.environ):
        if name.startswith(("PUSHER_", "FLASK_")):
            monkeypatch.delenv(name)
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'board.db'}",
            "PUSHER_LOCAL_SERVER": True,
            "PUSHER_LOCAL_SERVER_PORT": _free_port(),
        }
    )
    try:
        with serve_http(app) as url:
            yield url
    finally:
        with app.app_context():
            thread = app.extensions["pusher"].outbox.thread
            if thread is not None:
                thread.stop()
            app.extensions["sqlalchemy"].engine.dispose()
        local.stop_all()


def open_board(user: User) -> None:
    from playwright.sync_api import expect

    user.page.goto("/")
    expect(user.page.locator("#state")).to_have_text("connected")
    expect(user.page.locator("body[data-subscribed=true]")).to_have_count(1)


def test_two_pages_see_each_others_changes(
    browser: Any,  # noqa: F811
    board_url: str,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    ann = User(browser, board_url, "ann")
    bob = User(browser, board_url, "bob")
    open_board(ann)
    open_board(bob)
    a, b = ann.page, bob.page

    # Ann adds a task: TaskCreated reaches Bob's page (and her own).
    a.fill("#new-task input[name=title]", "Buy milk")
    a.press("#new-task input[name=title]", "Enter")
    for page in (a, b):
        expect(page.locator("#tasks li")).to_have_count(1)
        expect(page.locator("#tasks li .title")).to_have_text("Buy milk")

    # Bob ticks it: TaskUpdated reaches Ann.
    b.locator("#tasks li input[type=checkbox]").check()
    expect(a.locator("#tasks li[data-done=true]")).to_have_count(1)
    expect(a.locator("#tasks li input[type=checkbox]")).to_be_checked()

    # A refused change (an empty title, 400) sends nothing; the next one arrives.
    status = b.evaluate(
        """fetch("/tasks", {method: "POST", headers: {"Content-Type": "application/json"},
                            body: JSON.stringify({title: " "})}).then((r) => r.status)"""
    )
    assert status == 400
    b.fill("#new-task input[name=title]", "Call Carol")
    b.press("#new-task input[name=title]", "Enter")
    expect(a.locator("#tasks li .title")).to_have_text(["Buy milk", "Call Carol"])
    a.screenshot(path=str(tmp_path / "board-ann.png"), full_page=True)

    # Ann deletes the first: TaskDeleted removes it from Bob's page.
    a.locator("#tasks li").first.locator("button.remove").click()
    expect(b.locator("#tasks li .title")).to_have_text(["Call Carol"])

    # Private channels: the page saw only the board channel's events, by name.
    frames = [f for f in bob.frames if '"private-board"' in f]
    names = {
        n for n in ("TaskCreated", "TaskUpdated", "TaskDeleted") if any(n in f for f in frames)
    }
    assert names == {"TaskCreated", "TaskUpdated", "TaskDeleted"}
    assert all('"secret' not in f for f in frames)
    assert ann.outside_requests() == [] and bob.outside_requests() == []
    assert ann.errors == [] and bob.errors == []
    ann.context.close()
    bob.context.close()
