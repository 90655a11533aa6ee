"""Argument types shared by the sub-commands: each validates and says what is wrong."""

from __future__ import annotations

import argparse

from ..transports.base import check_queue_name


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"header must be NAME:VALUE, got {text!r}")
    return (name, value)


def queue_name(text: str) -> str:
    try:
        return check_queue_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def queue_list(text: str) -> tuple[str, ...]:
    """Comma-separated queue names, at least one."""
    names = tuple(queue_name(q.strip()) for q in text.split(",") if q.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one queue name, e.g. --queues email,images")
    return names
