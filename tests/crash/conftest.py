"""Fixtures of the crash tests: the random seed, logged so that a failure can be replayed.

``QUEUEIT_CRASH_SEED=N`` fixes the seed; ``QUEUEIT_CRASH_KILLS=N`` changes the number of
broker kills of the kill-loop test (default 40, never fewer than 30 unless asked).
"""

from __future__ import annotations

import os
import random

import pytest

SEED_ENV = "QUEUEIT_CRASH_SEED"


def pick_seed() -> int:
    raw = os.environ.get(SEED_ENV)
    return int(raw) if raw else random.SystemRandom().randrange(2**32)


@pytest.fixture
def crash_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's random choices, printed (pytest shows it with a failure)."""
    seed = pick_seed()
    print(f"{request.node.nodeid}: seed {seed} (replay with {SEED_ENV}={seed})")
    return seed
