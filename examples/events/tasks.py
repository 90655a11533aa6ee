"""Events (the talk's slides 71-73): a service triggers "user.saved"; listeners react.

    queueit worker examples.events.tasks:app
    python -m examples.events.emit alice@example.com bob@example.com

Each listener group gets every event; the listeners of one group share them (run the worker
twice and each event is still handled once per group); a group's events wait while its
workers are away. Listeners write what they did to ``EVENTS_DIR`` (default ./events-out).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from queueit import App

app = App(os.environ.get("QUEUEIT_URL", "queueit://127.0.0.1:61613"))


def record(name: str, entry: dict[str, Any]) -> None:
    folder = Path(os.environ.get("EVENTS_DIR", "events-out"))
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")


@app.on("user.saved", group="mailer")
def send_welcome(user: dict[str, Any]) -> None:
    record("welcome", {"to": user["email"], "subject": "Welcome"})


@app.on("user.saved", group="search")
async def index_user(user: dict[str, Any]) -> None:
    record("search-index", {"id": user["id"], "email": user["email"]})


class UserService:
    """The slide's service: saving a user triggers the event."""

    def save(self, user_id: int, email: str) -> None:
        # self.db.save(user)  -- the slide's database
        app.emit("user.saved", {"id": user_id, "email": email})
