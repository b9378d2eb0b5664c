"""Fixtures of the app-layer tests: the bot wired in-process (tests/support/inprocess.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.inprocess import App, in_process


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with in_process(tmp_path) as wired:
        yield wired


@pytest.fixture
async def buttons_app(tmp_path: Path) -> AsyncIterator[App]:
    """The same, with buttons on."""
    async with in_process(tmp_path, buttons=True) as wired:
        yield wired
