"""The talk's email queue (slides 65-68), done with queueit: a PHP app publishes, Python works.

    queueit worker examples.email.tasks:app            # the worker
    php examples/email/producer.php 5                  # the talk's UserService saves 5 users

``EmailQueue`` is the talk's ``AbstractQueue``/``EmailQueue`` pair: it says what a valid
message is and how to work on one. A message without a recipient is invalid: it goes to the
dead-letter queue with the reason and is never retried; an SMTP server that is down makes the
attempt fail, and it is retried with back-off. The SMTP server is ``SMTP_HOST``/``SMTP_PORT``
(default 127.0.0.1:2525: ``python -m examples.email.smtp_sink``).
"""

from __future__ import annotations

import os
import smtplib
from email.message import EmailMessage
from typing import Any

from queueit import App, Queue, Retry

app = App(os.environ.get("QUEUEIT_URL", "queueit://127.0.0.1:61613"))


@app.register
class EmailQueue(Queue):
    name = "email"
    retry = Retry(retries=5, base=1.0, retry_on=(OSError,))  # SMTP down: try again later

    def validate(self, message: Any) -> bool:
        return (
            isinstance(message, dict)
            and isinstance(message.get("to"), str)
            and "@" in message["to"]
            and isinstance(message.get("subject"), str)
        )

    def work(self, message: Any) -> None:
        mail = EmailMessage()
        mail["From"] = "noreply@example.com"
        mail["To"] = message["to"]
        mail["Subject"] = message["subject"]
        for name, value in (message.get("headers") or {}).items():
            mail[name] = str(value)
        mail.set_content(message.get("message", ""))
        host = os.environ.get("SMTP_HOST", "127.0.0.1")
        port = int(os.environ.get("SMTP_PORT", "2525"))
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.send_message(mail)
