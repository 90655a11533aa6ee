"""Password hashes, the users file, the guest rule and glob permissions."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from queueit.broker.auth import (
    Authenticator,
    AuthSettings,
    Permissions,
    User,
    UserDB,
    UsersFileError,
    hash_password,
    is_loopback,
    verify_password,
)


def test_hashes_are_salted_and_verify() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("pw", first)
    assert not verify_password("pW", first)
    assert not verify_password("pw", "plain-text")
    assert not verify_password("pw", "scrypt$99999999$8$1$AA==$AA==")  # absurd cost refused


def test_guest_only_from_loopback_and_can_be_switched_off() -> None:
    auth = Authenticator(UserDB(), AuthSettings())
    assert isinstance(auth.authenticate(None, None, "127.0.0.1"), User)
    assert isinstance(auth.authenticate("guest", "guest", "::1"), User)
    refused = auth.authenticate("guest", "guest", "10.1.2.3")
    assert isinstance(refused, str)
    assert "loopback" in refused
    assert auth.authenticate("guest", "nope", "127.0.0.1") == "Bad login or passcode"
    off = Authenticator(UserDB(), AuthSettings(guest="off"))
    assert off.authenticate(None, None, "127.0.0.1") == "Bad login or passcode"


def test_users_from_the_file() -> None:
    alice = User("alice", hash_password("a:b\\c"), Permissions(read=("/queue/*",)))
    auth = Authenticator(UserDB([alice]), AuthSettings())
    assert auth.authenticate("alice", "a:b\\c", "192.0.2.1") == alice  # any address for real users
    assert auth.authenticate("alice", None, "127.0.0.1") == "Bad login or passcode"
    assert auth.authenticate("bob", "x", "127.0.0.1") == "Bad login or passcode"


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("10.0.0.1", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_is_loopback(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_glob_permissions() -> None:
    p = Permissions(read=("/queue/email*", "/topic/news.?"), write=("/queue/[ab]",))
    assert p.allows("read", "/queue/email")
    assert p.allows("read", "/queue/email.high")
    assert p.allows("read", "/topic/news.x")
    assert not p.allows("read", "/topic/news.xy")
    assert p.allows("write", "/queue/a")
    assert not p.allows("write", "/queue/c")
    assert not p.allows("admin", "/queue/a")


def test_users_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    db = UserDB([User("alice", hash_password("x"), Permissions(("r",), ("w",), ("a",)))])
    db.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = UserDB.load(path)
    assert loaded.users == db.users


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "cannot read users file"),
        ('{"version": 2, "users": {}}', "not a version 1"),
        ('{"version": 1, "users": {"a": {}}}', "has no password hash"),
        ('{"version": 1, "users": {"a": {"password": "x", "read": "/queue/*"}}}', "must be a list"),
    ],
)
def test_bad_users_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(content)
    with pytest.raises(UsersFileError, match=message):
        UserDB.load(path)


def test_missing_users_file_means_no_users(tmp_path: Path) -> None:
    assert UserDB.load(tmp_path / "none.json").users == {}
