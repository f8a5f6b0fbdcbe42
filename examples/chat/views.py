"""The chat's pages and the POST routes that trigger events."""

from __future__ import annotations

import re
from typing import Any

from flask import abort
from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from werkzeug.wrappers import Response

from .realtime import activity
from .realtime import dm_channel
from .realtime import ENCRYPTED
from .realtime import pusher
from .realtime import ROOM
from .realtime import user_info

bp = Blueprint("chat", __name__)

#: Names become presence ids, user ids and parts of DM channel names.
NAME_RE = re.compile(r"\w{1,20}", re.ASCII)
MAX_TEXT = 500


@bp.get("/")
def index() -> str:
    name = session.get("name")
    if name is None:
        return render_template("signin.html")
    return render_template("chat.html", name=name, hue=user_info(name)["hue"])


@bp.post("/signin")
def signin() -> Response:
    name = request.form.get("name", "").strip()
    if NAME_RE.fullmatch(name):
        session["name"] = name
    else:
        flash("A name is 1 to 20 letters, digits or underscores.")
    return redirect(url_for(".index"))


@bp.post("/signout")
def signout() -> Response:
    session.clear()
    return redirect(url_for(".index"))


def _sender_and_text() -> tuple[str, str]:
    """The signed-in user, and the ``text`` of the JSON body; 401 or 400 otherwise."""
    name = session.get("name")
    if name is None:
        abort(401)
    body = request.get_json(silent=True) or {}
    text = body.get("text")
    if not isinstance(text, str) or not 0 < len(text.strip()) <= MAX_TEXT:
        abort(400, f"The text must be 1 to {MAX_TEXT} characters.")
    return name, text.strip()


@bp.post("/messages")
def send_message() -> tuple[dict[str, Any], int]:
    """A room message: everyone subscribed to the public room gets it."""
    name, text = _sender_and_text()
    pusher.trigger(ROOM, "message", {"from": name, "text": text, **user_info(name)})
    return {}, 201


@bp.post("/dm")
def send_direct_message() -> tuple[dict[str, Any], int]:
    """A direct message on the two users' private channel, and a notification."""
    name, text = _sender_and_text()
    to = (request.get_json(silent=True) or {}).get("to")
    if not isinstance(to, str) or not NAME_RE.fullmatch(to) or to == name:
        abort(400, "Choose someone else to send a direct message to.")
    pusher.trigger(dm_channel(name, to), "message", {"from": name, "to": to, "text": text})
    pusher.send_to_user(to, "notification", {"text": f"{name} sent you a direct message."})
    return {}, 201


@bp.post("/secret")
def send_secret() -> tuple[dict[str, Any], int]:
    """An encrypted message: Pusher relays only the ciphertext."""
    name, text = _sender_and_text()
    pusher.trigger(ENCRYPTED, "message", {"from": name, "text": text})
    return {}, 201


@bp.post("/welcome")
def welcome() -> tuple[dict[str, Any], int]:
    """The page calls this once signed in to Pusher: a notification for this user only."""
    name = session.get("name")
    if name is None:
        abort(401)
    pusher.send_to_user(name, "notification", {"text": f"Welcome, {name}! You are signed in."})
    return {}, 201


@bp.get("/activity")
def activity_log() -> list[dict[str, Any]]:
    """The activity log so far; new entries arrive on the ``activity`` channel."""
    return list(activity)
