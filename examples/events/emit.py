"""Save users (each save emits "user.saved")."""

from __future__ import annotations

import sys

from .tasks import UserService, app

if __name__ == "__main__":
    service = UserService()
    for i, email in enumerate(sys.argv[1:], start=1):
        service.save(i, email)
        print(f"saved {email}")
    app.close()
