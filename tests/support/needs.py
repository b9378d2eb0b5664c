"""What a test does when something it needs is not on this machine (PostgreSQL, a loop
mount, the real-server harness): under CI a failure, elsewhere a skip that names it.

.ci/run installs everything the tests use, so in CI a missing piece is a missing install
step, and a skip would hide it behind a green run."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(why: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI installs what the tests use: this is a missing install step in .ci/run)", pytrace=False)
    pytest.skip(why)
