import pathlib

import pytest

from duro.testing import LocalApp

PROJECTS = pathlib.Path(__file__).parent / "projects"


@pytest.fixture
async def gates(tmp_path):
    async with LocalApp(PROJECTS / "gates", tmp_path / "data") as app:
        yield app
