"""``queueit user add|remove|passwd|list``: edit the broker's users file."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from ..broker.auth import Permissions, User, UserDB, UsersFileError, check_username, hash_password
from ..broker.config import ConfigError, load_settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "user",
        help="manage broker users",
        description="Add, remove and list users in the users file the broker reads at start.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("add", "add a user"),
        ("passwd", "change a user's password or permissions"),
        ("remove", "remove a user"),
        ("list", "list users and their permissions"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument(
            "--data-dir", type=Path, default=Path("data"), help="the broker's data dir (default ./data)"
        )
        a.add_argument(
            "--config", type=Path, default=None, help="the broker's config file, if it names a users file"
        )
        if name != "list":
            a.add_argument("name", help="user name")
        if name in ("add", "passwd"):
            a.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from standard input (default: prompt, or $QUEUEIT_PASSWORD)",
            )
            for perm in ("read", "write", "admin"):
                a.add_argument(
                    f"--{perm}",
                    action="append",
                    default=None,
                    metavar="PATTERN",
                    help=f"glob of destinations with the {perm} permission, may repeat (e.g. '/queue/*')",
                )
        a.set_defaults(func=run)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif "QUEUEIT_PASSWORD" in os.environ:
        password = os.environ["QUEUEIT_PASSWORD"]
    else:
        password = getpass.getpass(f"password for {args.name}: ")
    if not password:
        raise ValueError("the password must not be empty")
    return password


def run(args: argparse.Namespace) -> int:
    try:
        path = load_settings(args.data_dir, args.config).users_path
        db = UserDB.load(path)
        if args.action == "list":
            for user in sorted(db.users.values(), key=lambda u: u.name):
                p = user.permissions
                print(
                    f"{user.name}\tread={','.join(p.read) or '-'}\twrite={','.join(p.write) or '-'}"
                    f"\tadmin={','.join(p.admin) or '-'}"
                )
            return 0
        name = check_username(args.name)
        existing = db.users.get(name)
        if args.action == "remove":
            if existing is None:
                raise ValueError(f"no user {name!r} in {path}")
            del db.users[name]
        elif args.action == "add":
            if existing is not None:
                raise ValueError(f"user {name!r} exists; use 'queueit user passwd {name}'")
            perms = Permissions(tuple(args.read or ()), tuple(args.write or ()), tuple(args.admin or ()))
            db.users[name] = User(name, hash_password(_password(args)), perms)
        else:
            if existing is None:
                raise ValueError(f"no user {name!r} in {path}; use 'queueit user add {name}'")
            old = existing.permissions
            perms = Permissions(
                tuple(args.read) if args.read is not None else old.read,
                tuple(args.write) if args.write is not None else old.write,
                tuple(args.admin) if args.admin is not None else old.admin,
            )
            db.users[name] = User(name, hash_password(_password(args)), perms)
        db.save(path)
    except (ValueError, UsersFileError, ConfigError, OSError) as exc:
        print(f"queueit user: {exc}", file=sys.stderr)
        return 2
    print(f"{args.action}: {args.name} ({path}); restart the broker to apply")
    return 0
