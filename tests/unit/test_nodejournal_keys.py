"""The node journal's key of an object: its database path relative to the data directory."""

import pathlib

import pytest

from duro.runtime.nodejournal import NodeJournal


def test_key_of_is_the_path_below_the_data_directory(tmp_path):
    j = NodeJournal(tmp_path)
    db = j.data_dir / "do" / "ns" / "abc.sqlite"
    assert j.key_of(db) == "do/ns/abc.sqlite"
    assert j.key_of(str(db)) == "do/ns/abc.sqlite"  # a str takes the general way
    assert j.key_of(pathlib.PurePosixPath(str(db))) == "do/ns/abc.sqlite"
    # A sibling whose name starts with the data directory's is not below it.
    with pytest.raises(ValueError):
        j.key_of(pathlib.Path(str(j.data_dir) + "x") / "do" / "a.sqlite")
    assert j.key_of(j.data_dir) == "."  # as PurePath.relative_to has it
