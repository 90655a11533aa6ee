from __future__ import annotations

from collections.abc import Iterator

import pytest

from .raw import RawPeers


@pytest.fixture
def raw() -> Iterator[RawPeers]:
    peers = RawPeers()
    try:
        yield peers
    finally:
        peers.close_all()
