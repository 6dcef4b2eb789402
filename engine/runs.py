"""Where runs live: one folder per run under the user data directory, with latest and best checkpoints."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from .errors import CheckpointError

LATEST = "latest.pt"
BEST = "best.pt"


def default_runs_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("charrnn-tui", appauthor=False) / "runs"


def sanitize_run_name(name: str) -> str:
    """A run name that stays inside the runs folder: no separators, no dots at the start."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return clean[:80] or "run"


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """Create a fresh folder (user-only permissions) named `name`, or `name-2`, `name-3`..."""
    base = sanitize_run_name(name)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for n in range(1, 10_000):
            candidate = runs_dir / (base if n == 1 else f"{base}-{n}")
            try:
                candidate.mkdir(mode=0o700)
                return candidate
            except FileExistsError:
                continue
    except OSError as e:
        raise CheckpointError(f"cannot create a run folder in {runs_dir}: {e.strerror or e}; "
                              "choose another with --runs-dir") from None
    raise CheckpointError(f"{runs_dir}: too many runs named {base}")


class RunLock:
    """An exclusive lock on a run folder, so two processes never write one run.

    flock is released by the OS when the process dies, so a killed run never leaves a stale lock.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.handle = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not on POSIX: no lock, as before
            return self
        try:
            handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the run
        except OSError as e:
            raise CheckpointError(f"cannot lock run {self.path.parent.name}: {e.strerror or e}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise CheckpointError(f"run {self.path.parent.name} is in use by {owner}; stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def remove_partial_writes(run_dir: Path) -> None:
    """Delete temporary files left by a save that was killed; call only while holding the run lock."""
    for partial in run_dir.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):  # a read-only folder: the next save reports it
            partial.unlink(missing_ok=True)


def keep_step_copy(latest: Path, step: int, keep: int) -> None:
    """Hard-link `latest` as step-N.pt and delete all but the newest `keep` such files.

    The link costs no write; the next save renames a new file over latest.pt, so the link keeps
    the old one. Where links are not supported, older checkpoints are simply not kept.
    """
    if keep <= 0:
        return
    copy = latest.with_name(f"step-{step:07d}.pt")
    try:
        copy.unlink(missing_ok=True)
        os.link(latest, copy)
    except OSError:
        return
    for old in sorted(latest.parent.glob("step-*.pt"))[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink(missing_ok=True)


def default_run_name(corpus_name: str, model_kind: str, hidden: int) -> str:
    return f"{corpus_name}-{model_kind}{hidden}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolve_checkpoint(ref: str | None, runs_dir: Path) -> Path:
    """A checkpoint from a file path, a run folder, a run name, or (None) the most recent run."""
    if ref:
        path = Path(ref).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            return _latest_in(path)
        named = runs_dir / sanitize_run_name(ref)
        if named.is_dir():
            return _latest_in(named)
        raise CheckpointError(f"{ref}: no such checkpoint, run folder or run name in {runs_dir}")
    runs = [p for p in runs_dir.glob(f"*/{LATEST}")] if runs_dir.is_dir() else []
    if not runs:
        raise CheckpointError(f"no runs to resume in {runs_dir}")
    return max(runs, key=lambda p: p.stat().st_mtime)


def _latest_in(folder: Path) -> Path:
    path = folder / LATEST
    if not path.is_file():
        raise CheckpointError(f"{folder}: run folder has no {LATEST}")
    return path
