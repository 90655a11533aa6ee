"""The demo app ``queueit demo`` runs: the talk's email queue and thumbnail pipeline, simulated.

Jobs take a few milliseconds, and some fail now and then so that retries show; nothing is
really mailed or resized. The broker URL comes from ``QUEUEIT_URL`` (``queueit demo`` sets it).
"""

from __future__ import annotations

import os
import random
import time

from .jobs import App, Retry

app = App(os.environ.get("QUEUEIT_URL", "queueit://127.0.0.1:61613"))

#: Share of attempts that fail on purpose (a flaky SMTP server).
FLAKY = 0.08


@app.job(queue="demo.email", retry=Retry(retries=4, base=0.2, cap=2.0, retry_on=(ConnectionError,)))
def send_welcome_email(to: str, subject: str = "Welcome") -> None:
    """Pretend to talk to an SMTP server: busy now and then (retried), and some addresses are
    bad (failed at once: retrying cannot fix them)."""
    time.sleep(random.uniform(0.002, 0.02))
    if not to.partition("@")[2]:
        raise ValueError(f"no domain in address {to!r}")
    if random.random() < FLAKY:
        raise ConnectionError(f"SMTP server busy (sending to {to})")


@app.job(queue="demo.images")
def resize(path: str, width: int) -> str:
    time.sleep(random.uniform(0.005, 0.03))
    return f"{path.removesuffix('.png')}-{width}.png"


@app.job(queue="demo.images")
async def upload(path: str, bucket: str) -> None:
    import asyncio

    await asyncio.sleep(random.uniform(0.002, 0.01))


@app.on("user.signed_up", group="demo.welcome")
def on_signup(user: dict[str, str]) -> None:
    """The talk's event listener: a saved user gets a welcome email."""
    send_welcome_email.send(to=user["email"])
