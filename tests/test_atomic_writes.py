"""`replace_atomically`, the one way a run's files (checkpoints, status.json, metrics.jsonl cut
back, sweep.json) are rewritten: the old file or the new one whatever happens half way, no temporary
file left, nothing written through a name planted beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charrnn_tui.engine.runs import remove_partial_writes, replace_atomically


def test_the_new_file_replaces_the_old_whole(tmp_path: Path):
    target = tmp_path / "status.json"
    target.write_bytes(b"old")
    for durable in (True, False):
        data = f"new {durable}".encode()
        replace_atomically(target, lambda f, data=data: f.write(data), durable=durable)
        assert target.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no temporary file left
    assert target.stat().st_mode & 0o077 == 0  # user-only, as mkstemp makes it


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temporary(tmp_path: Path, error: BaseException):
    target = tmp_path / "latest.pt"
    target.write_bytes(b"the old checkpoint")

    def half_then_fail(f):
        f.write(b"half of the new")
        raise error

    with pytest.raises(type(error)):
        replace_atomically(target, half_then_fail)
    assert target.read_bytes() == b"the old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_a_link_planted_where_a_temporary_file_would_go_is_not_written_through(tmp_path: Path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    run = tmp_path / "run"
    run.mkdir()
    for n in range(5):  # the names earlier versions wrote to, and more
        (run / f".status.json.tmp-{os.getpid()}-{n}").symlink_to(victim)
    (run / f".status.json.tmp-{os.getpid()}").symlink_to(victim)
    replace_atomically(run / "status.json", lambda f: f.write(b"{}"))
    assert victim.read_bytes() == b"untouched" and (run / "status.json").read_bytes() == b"{}"
    remove_partial_writes(run)  # what a run clears at its start: the planted names too
    assert [p.name for p in run.iterdir()] == ["status.json"]
