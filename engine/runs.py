"""Where runs live: one folder per run under the user data directory, with latest and best checkpoints."""

from __future__ import annotations

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
    runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = sanitize_run_name(name)
    for n in range(1, 10_000):
        candidate = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir(mode=0o700)
            return candidate
        except FileExistsError:
            continue
    raise CheckpointError(f"{runs_dir}: too many runs named {base}")


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
