"""Users, salted password hashes, and per-destination permissions.

Users live in a JSON file (``users.json`` in the data directory unless the config names
another), edited with ``queueit user add|remove|passwd|list``; the broker reads it at
start. File format, version 1::

    {"version": 1,
     "users": {"alice": {"password": "scrypt$16384$8$1$<salt b64>$<hash b64>",
                         "read": ["/queue/email*"], "write": ["/queue/*"], "admin": []}}}

Permissions are glob patterns (``fnmatch``: ``*``, ``?``, ``[...]``) over destination
strings such as ``/queue/email`` or ``/exchange/events/user.saved``:

* ``read``  - SUBSCRIBE;
* ``write`` - SEND;
* ``admin`` - create a queue or exchange (first use of a ``/queue/`` name creates it),
  bind, delete, purge, and see it in ``queueit stat``.

The built-in ``guest`` user (password ``guest``, every permission) is accepted only from
loopback addresses, like RabbitMQ's, and can be switched off (``guest = "off"``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

FILE_VERSION = 1
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_USER_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
MAX_PASSWORD_LENGTH = 1024
GUEST = "guest"


class UsersFileError(Exception):
    """The users file is missing pieces, malformed, or of an unknown version."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted scrypt hash in the self-describing form ``scrypt$N$r$p$salt$hash``."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
        n_i, r_i, p_i = int(n), int(r), int(p)
    except ValueError:
        return False
    if not (2 <= n_i <= 2**20 and 1 <= r_i <= 32 and 1 <= p_i <= 16) or len(password) > MAX_PASSWORD_LENGTH:
        return False
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n_i, r=r_i, p=p_i, dklen=len(expected), maxmem=2**27
    )
    return hmac.compare_digest(digest, expected)


def check_username(name: str) -> str:
    if _USER_RE.fullmatch(name) is None:
        raise ValueError(f"invalid user name {name!r}: use 1-64 letters, digits or _ . @ + -")
    return name


@dataclass(frozen=True, slots=True)
class Permissions:
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()

    @classmethod
    def everything(cls) -> Permissions:
        return cls(("*",), ("*",), ("*",))

    def allows(self, permission: str, destination: str) -> bool:
        patterns = self.write if permission == "write" else self.read if permission == "read" else self.admin
        return _matches(patterns, destination)


@functools.lru_cache(maxsize=65_536)
def _matches(patterns: tuple[str, ...], destination: str) -> bool:
    # Checked on every SEND: cached, since glob matching costs more than the rest of a publish.
    # Keyed by the patterns (a tuple of str hashes in C), not by the Permissions dataclass.
    return any(fnmatchcase(destination, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_hash: str
    permissions: Permissions = field(default_factory=Permissions)


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


class UserDB:
    """The users file in memory. Only the CLI writes it (atomically: temp file + rename)."""

    def __init__(self, users: Iterable[User] = ()) -> None:
        self.users: dict[str, User] = {u.name: u for u in users}

    @classmethod
    def load(cls, path: Path) -> UserDB:
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise UsersFileError(f"cannot read users file {path}: {exc}") from exc
        if (
            not isinstance(raw, dict)
            or raw.get("version") != FILE_VERSION
            or not isinstance(raw.get("users"), dict)
        ):
            raise UsersFileError(f"users file {path} is not a version {FILE_VERSION} queueit users file")
        users = []
        for name, entry in raw["users"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
                raise UsersFileError(f"users file {path}: user {name!r} has no password hash")
            perms = {}
            for kind in ("read", "write", "admin"):
                value = entry.get(kind, [])
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise UsersFileError(f"users file {path}: {name}.{kind} must be a list of patterns")
                perms[kind] = tuple(value)
            users.append(User(check_username(name), entry["password"], Permissions(**perms)))
        return cls(users)

    def save(self, path: Path) -> None:
        data = {
            "version": FILE_VERSION,
            "users": {
                u.name: {
                    "password": u.password_hash,
                    "read": list(u.permissions.read),
                    "write": list(u.permissions.write),
                    "admin": list(u.permissions.admin),
                }
                for u in sorted(self.users.values(), key=lambda u: u.name)
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass(frozen=True, slots=True)
class AuthSettings:
    guest: str = "loopback"  # "loopback" or "off"


class Authenticator:
    """Decides who a CONNECT is. Blocking (scrypt): call it from a worker thread."""

    def __init__(self, db: UserDB, settings: AuthSettings) -> None:
        self.db = db
        self.settings = settings
        self._guest = User(GUEST, "", Permissions.everything())
        self._dummy_hash = hash_password(secrets.token_hex(8))

    def authenticate(self, login: str | None, passcode: str | None, peer: str | None) -> User | str:
        """The user, or the reason for refusing (sent to the client as is)."""
        name = login or GUEST
        user = self.db.users.get(name)
        if user is not None:
            if passcode is not None and verify_password(passcode, user.password_hash):
                return user
            return "Bad login or passcode"
        if name != GUEST:
            # Spend the same scrypt time as for a known user: the answer's timing must not
            # tell which user names exist.
            verify_password(passcode or "", self._dummy_hash)
            return "Bad login or passcode"
        if name == GUEST and self.settings.guest != "off":
            if login is not None and passcode != GUEST:
                return "Bad login or passcode"
            if not is_loopback(peer):
                return (
                    "The guest user may connect only from a loopback address; "
                    "create a user with 'queueit user add'"
                )
            return self._guest
        return "Bad login or passcode"  # guest switched off
