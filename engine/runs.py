"""Where runs live: one folder per run under the user data directory, with latest and best checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError

LATEST = "latest.pt"
BEST = "best.pt"
SOCKET = "engine.sock"  # the live run's server (engine/server.py)
STATUS = "status.json"  # what the run's server last said about it, for `charrnn-tui runs`
LOG = "engine.log"  # a detached engine's output
LIVE_STATES = ("starting", "training", "paused")


def default_runs_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("charrnn-tui", appauthor=False) / "runs"


def is_default_runs_dir(runs_dir: Path) -> bool:
    try:
        return Path(runs_dir).expanduser().resolve() == default_runs_dir().resolve()
    except (OSError, RuntimeError):
        return Path(runs_dir).expanduser().absolute() == default_runs_dir().absolute()


def command_hint(words: str, runs_dir: Path) -> str:
    """`charrnn-tui WORDS` as it must be typed to reach a run in runs_dir: a folder other than the
    default is repeated with --runs-dir. Every hint that names a command goes through here."""
    line = f"charrnn-tui {words}"
    if not is_default_runs_dir(runs_dir):
        line += f" --runs-dir {shlex.quote(str(runs_dir))}"
    return line


def run_hint(verb: str, run_dir: Path, more: str = "") -> str:
    """`charrnn-tui VERB RUN [MORE]` for the run in run_dir, with --runs-dir where it is needed."""
    return command_hint(f"{verb} {shlex.quote(Path(run_dir).name)}{more}", Path(run_dir).parent)


def check_runs_dir(runs_dir: Path) -> bool:
    """Whether the runs folder exists; a --runs-dir that does not (a typo) is an error. The default
    folder not existing yet is no error: a new user simply has no runs."""
    if Path(runs_dir).is_dir():
        return True
    if is_default_runs_dir(runs_dir):
        return False
    if Path(runs_dir).exists():
        raise ConfigError(f"{runs_dir} is not a folder (--runs-dir)")
    raise ConfigError(f"no such folder {runs_dir} (--runs-dir)")


def sanitize_run_name(name: str) -> str:
    """A run name that stays inside the runs folder: no separators, no dots at the start."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return clean[:80] or "run"


def new_run_dir(runs_dir: Path, name: str, *, exact: bool = False) -> Path:
    """Create a fresh folder (user-only permissions) named `name`, or `name-2`, `name-3`...; with
    `exact` (a name the user chose), `name` or an error: `sample NAME` must never read another run."""
    base = sanitize_run_name(name)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for n in range(1, 10_000):
            candidate = runs_dir / (base if n == 1 else f"{base}-{n}")
            try:
                candidate.mkdir(mode=0o700)
                return candidate
            except FileExistsError:
                if exact:
                    raise ConfigError(name_taken_message(base, runs_dir)) from None
                continue
    except OSError as e:
        raise CheckpointError(f"cannot create a run folder in {runs_dir}: {e.strerror or e}; "
                              "choose another with --runs-dir") from None
    raise CheckpointError(f"{runs_dir}: too many runs named {base}")


def name_taken_message(name: str, runs_dir: Path) -> str:
    return f"run {name} already exists in {runs_dir}: continue it with --resume {name}, or choose another --name"


def check_new_run_name(name: str | None, runs_dir: Path) -> None:
    """Refuse at once a --name that is taken (the engine refuses it too, without a race)."""
    if name and (Path(runs_dir) / sanitize_run_name(name)).exists():
        raise ConfigError(name_taken_message(sanitize_run_name(name), runs_dir))


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
        for attempt in range(5):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt < 4:  # `runs` may be probing it for a moment (is_live)
                    time.sleep(0.1)
                    continue
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


def default_run_name(corpus_name: str, model_kind: str, hidden: int, layers: int = 1) -> str:
    """corpus-model-time: `timemachine-lstm256-20261207-012200`, `...-lstm3x96-...` for 3 layers."""
    size = f"{layers}x{hidden}" if layers > 1 else str(hidden)
    return f"{corpus_name}-{model_kind}{size}-{time.strftime('%Y%m%d-%H%M%S')}"


def is_bare_name(ref: str) -> bool:
    """A run name rather than a path: no folder part, not ~ or a dot path."""
    return "/" not in ref and not ref.startswith(("~", "."))


def resolve_checkpoint(ref: str | None, runs_dir: Path) -> Path:
    """A checkpoint from a file path, a run folder, a run name, or (None) the most recent run."""
    if ref:
        named = runs_dir / sanitize_run_name(ref)
        if is_bare_name(ref) and named.is_dir():
            return _latest_in(named)  # a run's name wins over a folder of that name here
        path = Path(ref).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            return _latest_in(path)
        if named.is_dir():
            return _latest_in(named)
        check_runs_dir(runs_dir)
        raise CheckpointError(f"{ref}: no such checkpoint, run folder or run name in {runs_dir}")
    runs = [p for p in runs_dir.glob(f"*/{LATEST}")] if runs_dir.is_dir() else []
    if not runs:
        raise CheckpointError(f"no runs to resume in {runs_dir}")
    return max(runs, key=lambda p: p.stat().st_mtime)


def _latest_in(folder: Path) -> Path:
    path = folder / LATEST
    if not path.is_file():
        raise CheckpointError(no_checkpoint_message(folder))
    return path


ENDED = {"crashed": "crashed", "error": "ended with an error", "stopped": "was stopped", "finished": "finished"}


def no_checkpoint_message(folder: Path) -> str:
    """Why a run folder has no latest.pt yet, and what to do: a live run saves one soon (or now,
    asked); one that ended before its first save has nothing to load."""
    entry = run_entry(folder)
    if entry is None:
        return f"{folder}: run folder has no {LATEST}"
    at = "" if entry.step is None else f" at step {entry.step:,}"
    if not entry.live:
        return f"run {entry.name} {ENDED.get(entry.state, entry.state)}{at} before saving a checkpoint: nothing to load"
    save_now = f"to save one now, press c in `{run_hint('attach', folder)}`"
    status = read_status(folder)
    interval = _int_or_none(status.get("checkpoint_interval"))  # in status.json since the engine wrote it
    if entry.state != "training" or interval is None:
        return f"run {entry.name} is {entry.state}{at} and has saved no checkpoint yet; {save_now}"
    step = entry.step or 0
    reported = f" (at step {step:,} by its last report)"  # status.json is rewritten every few seconds
    due = [step // interval * interval + interval] if interval > 0 else []
    due += [m for m in [_int_or_none(status.get("max_steps"))] if m and m > step]
    if not due:
        return (f"run {entry.name} is training{reported} and saves its first checkpoint when it ends "
                f"(--checkpoint-interval 0); {save_now}")
    return (f"run {entry.name} is training and has saved no checkpoint yet: its first comes at step {min(due):,}"
            f"{reported}; {save_now}")


def is_live(run_dir: Path) -> bool:
    """Whether an engine holds the run's lock now. The kernel drops a dead process's lock, so a
    run killed with kill -9 (or a reboot) reads as not live, whatever files it left."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: trust the socket file
        return (run_dir / SOCKET).exists()
    try:
        handle = open(run_dir / ".lock", "rb")  # noqa: SIM115
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    """status.json, replaced atomically: a reader never sees half of it."""
    status = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in status.items()}
    with contextlib.suppress(OSError):
        # A name of its own per write: two writers never truncate each other's file.
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{STATUS}.tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(status, f)
            os.replace(tmp, run_dir / STATUS)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class RunEntry:
    name: str
    path: Path
    state: str  # training, paused, starting, finished, stopped, crashed, error
    live: bool
    step: int | None
    best_val: float | None
    corpus: str | None
    model: str | None
    viewers: int
    updated: float  # when the run last did something (time.time())
    tokens: str | None = None  # "char" or "word"; None for a run from before status said so
    world_size: int = 1  # processes that train it together (torchrun)

    @property
    def model_label(self) -> str:
        """The model as `runs` shows it, with the processes that train it when more than one."""
        label = self.model or "-"
        return f"{label} ({self.world_size} ranks)" if self.world_size > 1 else label

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "state": self.state, "live": self.live, "step": self.step,
                "best_val": self.best_val, "corpus": self.corpus, "model": self.model, "viewers": self.viewers,
                "updated": self.updated, "tokens": self.tokens,
                "world_size": self.world_size}


def list_runs(runs_dir: Path) -> list[RunEntry]:
    """Every run in the folder, most recently active first, with its state as its files and lock
    tell it: a run whose status says it was training but whose engine holds no lock crashed."""
    folders = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] if runs_dir.is_dir() else []
    entries = [entry for entry in map(run_entry, folders) if entry is not None]
    return sorted(entries, key=lambda e: e.updated, reverse=True)


def run_entry(folder: Path) -> RunEntry | None:
    """One run as `runs` lists it; None for a folder that is no run (no status, no checkpoint)."""
    status = read_status(folder)
    if not status and not (folder / LATEST).exists():
        return None
    live = is_live(folder)
    state = str(status.get("state") or "stopped")
    if live and state not in LIVE_STATES:
        state = "starting"
    elif not live and state in LIVE_STATES:
        state = "crashed"
    try:
        files = [folder / n for n in (STATUS, LATEST) if (folder / n).exists()]
        updated = max((p.stat().st_mtime for p in files), default=folder.stat().st_mtime)
    except OSError:  # removed while we looked
        return None
    return RunEntry(
        name=folder.name, path=folder, state=state, live=live, step=_int_or_none(status.get("step")),
        best_val=_float_or_none(status.get("best_val")), corpus=status.get("corpus"), model=status.get("model"),
        viewers=int(status.get("viewers") or 0) if live else 0, updated=updated,
        tokens=status.get("tokens") if status.get("tokens") in ("char", "word") else None,
        world_size=max(1, _int_or_none(status.get("world_size")) or 1),
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@contextlib.contextmanager
def unix_address(path: Path):
    """An address for `path` that fits AF_UNIX's 107 bytes: the path itself when short enough, else
    the same file through /proc/self/fd of its folder (Linux), which is short at any depth."""
    if len(os.fsencode(path)) <= 100:
        yield str(path)
        return
    if not os.path.isdir("/proc/self/fd"):
        raise OSError(f"{path}: too long for a Unix socket on this system; use a shorter --runs-dir")
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
