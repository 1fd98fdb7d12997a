"""One atomic-write helper (node/fileio.write_atomic) for the store, the watcher's state file and
the client's journals: content, mode, no temp left behind, and no second hand-rolled copy."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from gpuconsole.node.fileio import write_atomic
from tests.helpers import REPO


def test_replaces_content_with_the_mode_asked_for_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    old_umask = os.umask(0o077)
    try:
        write_atomic(str(target), b"new", 0o644)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["f.json"]


def test_a_failed_write_changes_nothing_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.mkdir()  # renaming a file over a directory fails after the temp was written
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        write_atomic(str(target), b"new")
    assert sorted(os.listdir(tmp_path)) == ["f.json"]
    assert (target / "keep").read_text() == "x"


def test_no_other_module_hand_rolls_a_rename_commit() -> None:
    # store.py (its prev/primary/mirror sequence) and loader.py (the bootstrap, which runs before
    # any other node module is loaded) are the two documented exceptions.
    allowed = {"node/fileio.py", "node/store.py", "node/loader.py"}
    found = []
    for path in (REPO / "gpuconsole").rglob("*.py"):
        rel = path.relative_to(REPO / "gpuconsole").as_posix()
        if rel not in allowed and re.search(r"os\.fsync\(|os\.(replace|rename)\(\w*tmp", path.read_text()):
            found.append(rel)
    assert found == []
