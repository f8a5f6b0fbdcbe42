"""The board's page and its JSON routes. No route triggers anything itself:
saving a task broadcasts it."""

from __future__ import annotations

from typing import Any

from flask import abort
from flask import Blueprint
from flask import render_template
from flask import request

from .models import BOARD
from .models import db
from .models import MAX_TITLE
from .models import Task

bp = Blueprint("board", __name__)


def _task(task: Task) -> dict[str, Any]:
    return {"id": task.id, "title": task.title, "done": task.done}


@bp.get("/")
def index() -> str:
    tasks = db.session.scalars(db.select(Task).order_by(Task.id)).all()
    return render_template("board.html", tasks=[_task(t) for t in tasks], channel=BOARD)


def _title() -> str:
    body = request.get_json(silent=True)
    title = body.get("title") if isinstance(body, dict) else None
    if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
        abort(400, description=f"title must be 1 to {MAX_TITLE} characters")
    return title.strip()


@bp.post("/tasks")
def create() -> tuple[dict[str, Any], int]:
    task = Task(title=_title())
    db.session.add(task)
    db.session.commit()  # TaskCreated goes into the outbox in this transaction
    return _task(task), 201


@bp.post("/tasks/<int:task_id>")
def change(task_id: int) -> dict[str, Any]:
    task = db.get_or_404(Task, task_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("done", False), bool):
        abort(400, description="send {'done': true or false} and/or {'title': ...}")
    if "title" in body:
        task.title = _title()
    if "done" in body:
        task.done = body["done"]
    db.session.commit()  # TaskUpdated, if anything changed
    return _task(task)


@bp.delete("/tasks/<int:task_id>")
def remove(task_id: int) -> tuple[str, int]:
    db.session.delete(db.get_or_404(Task, task_id))
    db.session.commit()  # TaskDeleted
    return "", 204


@bp.errorhandler(400)
@bp.errorhandler(404)
def json_error(error: Any) -> tuple[dict[str, str], int]:
    return {"error": error.description}, error.code
