import pathlib

import pytest

from duro.testing import LocalApp

PROJECTS = pathlib.Path(__file__).parent / "projects"


@pytest.fixture
async def gates(tmp_path):
    async with LocalApp(PROJECTS / "gates", tmp_path / "data") as app:
        yield app


@pytest.fixture
async def review(tmp_path):
    """The objects of projects/review: transactions, critical sections, RPC corners, wait_until."""
    async with LocalApp(PROJECTS / "review", tmp_path / "data") as app:
        yield app
