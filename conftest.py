"""Shared fixtures: real `duro serve` subprocesses on free 127.0.0.1 ports."""

import pathlib

import pytest

from duro.testing import ServerProcess

ROOT = pathlib.Path(__file__).resolve().parent


@pytest.fixture
def serve(tmp_path):
    """serve(project_dir, *args) starts `duro serve` with a fresh data dir; stopped after the test."""
    started = []

    def start(project, *args, data=None, **kw):
        data = data or tmp_path / f"data{len(started)}"
        proc = ServerProcess(project, data, args=list(args), log_path=tmp_path / f"server{len(started)}.log", **kw)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
