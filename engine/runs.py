"""Where runs live: one folder per run under the user data directory, with latest and best checkpoints."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shlex
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from charrnn_tui.engine.errors import CharRNNError, CheckpointError, ConfigError
from charrnn_tui.engine.printable import printable_line

LATEST = "latest.pt"
BEST = "best.pt"
SOCKET = "engine.sock"  # the live run's server (engine/serve/server.py)
STATUS = "status.json"  # what the run's server last said about it, for `charrnn-tui runs`
LOG = "engine.log"  # a detached engine's output
METRICS = "metrics.jsonl"  # a line per progress report and evaluation (engine/run/metrics.py)
SWEEP = "sweep.json"  # marks a sweep's folder (engine/tune/sweep.py): its trials are runs one level down
SWEEP_LIMIT = 4 * 2**20  # bytes: a sweep.json is a few kilobytes (81 trials: about 60 KB)
LIVE_STATES = ("starting", "training", "paused")
UNREADABLE = "unreadable"  # the state `runs` shows for a run whose files cannot be trusted
STATUS_LIMIT = 64 * 1024  # bytes: a status.json is a few hundred; a bigger one is none of ours
MAX_COUNT = 2**53  # the largest step (or count) taken from a file: beyond it a float loses whole numbers
TEXT_LIMIT = 200  # characters kept of a state, corpus or model from status.json


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


def background_message(run_dir: Path, state: str = "training", *, still: bool = False) -> str:
    """A run left in the background (`train --detach`, `d` in the app): where, and the commands
    that reach it, as they must be typed."""
    return (printable_line(f"run {run_dir.name} is {'still ' if still else ''}{state} in the background ({run_dir})")
            + "\n"
            f"  watch it:  {run_hint('attach', run_dir)}\n"
            f"  stop it:   {run_hint('stop', run_dir)}\n")


def check_runs_dir(runs_dir: Path) -> bool:
    """Whether the runs folder exists; a --runs-dir that does not (a typo) is an error, and so is
    one that others could plant files in (runs_dir_problem). The default folder not existing yet is
    no error: a new user simply has no runs."""
    if Path(runs_dir).is_dir():
        require_safe_runs_dir(runs_dir)
        return True
    if is_default_runs_dir(runs_dir):
        return False
    if Path(runs_dir).exists():
        raise ConfigError(f"{runs_dir} is not a folder (--runs-dir)")
    raise ConfigError(f"no such folder {runs_dir} (--runs-dir)")


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _writers(mode: int) -> str | None:
    """Who besides the owner may add, remove or rename entries in a folder of this mode; None when
    nobody, or when the sticky bit (as on /tmp) lets each remove or rename only their own."""
    if mode & stat.S_ISVTX:
        return None
    who = [name for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others")) if mode & bit]
    return " and ".join(who) or None


def runs_dir_problem(runs_dir: Path) -> str | None:
    """Why a runs folder is unsafe, in one line with what to do; None when it is yours and nobody
    else can add files to it (or it does not exist yet). Someone who can write there can plant a
    symbolic link where a run writes, or a run of their own where `train --resume` looks."""
    try:
        st = os.stat(runs_dir)  # through a link: ~/runs -> /data/runs is the folder /data/runs
    except OSError:
        return None
    shown = printable_line(str(runs_dir))
    if st.st_uid != os.geteuid():
        return (f"runs folder {shown} belongs to {_user(st.st_uid)}, not to you: keep runs in a folder of "
                "your own (choose another --runs-dir)")
    writers = _writers(st.st_mode)
    if writers:
        return (f"runs folder {shown} is writable by {writers} (mode {stat.S_IMODE(st.st_mode):o}), who could "
                f"plant files in your runs: `chmod go-w {shlex.quote(shown)}`, or choose another --runs-dir")
    return None


def require_safe_runs_dir(runs_dir: Path) -> None:
    problem = runs_dir_problem(runs_dir)
    if problem is not None:
        raise ConfigError(problem)


def run_dir_problem(run_dir: Path) -> str | None:
    """Why the engine must not write into this run folder, in one line; None when it is a real
    folder (not a symbolic link) of yours that only you can add files to."""
    shown = printable_line(str(run_dir))
    try:
        st = os.lstat(run_dir)
    except OSError as e:
        return f"run folder {shown}: {e.strerror or e}"
    if stat.S_ISLNK(st.st_mode):
        target = printable_line(os.path.realpath(run_dir))
        return f"run folder {shown} is a symbolic link: charrnn-tui writes only into real folders; give {target}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{shown} is not a run folder"
    if st.st_uid != os.geteuid():
        return (f"run {printable_line(run_dir.name)} belongs to {_user(st.st_uid)}, not to you: copy its {LATEST} into "
                "a folder of your own to continue it there")
    writers = _writers(st.st_mode)
    if writers:
        return (f"run folder {shown} is writable by {writers} (mode {stat.S_IMODE(st.st_mode):o}): "
                f"`chmod go-w {shlex.quote(shown)}` first")
    return None


def require_own_run_dir(run_dir: Path) -> None:
    problem = run_dir_problem(run_dir)
    if problem is not None:
        raise ConfigError(problem)


def run_folders(runs_dir: Path) -> list[Path]:
    """The folders in the runs folder that may be runs: yours, real folders (not symbolic links),
    not hidden. Another user's (a shared folder with the sticky bit) are never looked into."""
    folders = []
    with contextlib.suppress(OSError), os.scandir(runs_dir) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not entry.name.startswith(".") and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                folders.append(Path(entry.path))
    return folders


def is_sweep_folder(folder: Path) -> bool:
    """Whether a folder of the runs folder is a sweep's (`tune`): it holds a regular sweep.json."""
    try:
        return stat.S_ISREG(os.lstat(folder / SWEEP).st_mode)
    except OSError:
        return False


def runs_and_trials(runs_dir: Path) -> list[tuple[Path, str]]:
    """(folder, name) of each folder that may be a run: those of run_folders, and one level into
    each sweep's folder that only you can write to, the trials, named SWEEP/TRIAL."""
    found = []
    for folder in run_folders(runs_dir):
        found.append((folder, folder.name))
        if is_sweep_folder(folder) and run_dir_problem(folder) is None:
            found += [(trial, f"{folder.name}/{trial.name}") for trial in run_folders(folder)]
    return found


def named_run(ref: str, runs_dir: Path) -> Path:
    """Where the run named `ref` would be: RUNS/NAME, or for SWEEP/TRIAL, a trial of a sweep."""
    sweep, _, trial = ref.partition("/")
    if trial and "/" not in trial and sanitize_run_name(sweep) == sweep and sanitize_run_name(trial) == trial \
            and is_sweep_folder(runs_dir / sweep):
        return runs_dir / sweep / trial
    return runs_dir / sanitize_run_name(ref)


def open_in_run(path: Path, flags: int, mode: int = 0o600) -> int:
    """A descriptor of the regular file `path` in a run folder, created user-only if `flags` has
    O_CREAT. Never through a symbolic link (O_NOFOLLOW), never a FIFO or a device (O_NONBLOCK: even
    opening one cannot block; then it is refused), and, opened to write, never a file of another
    user's or one with other hard links (writing it would change a file elsewhere). Raises OSError
    whose strerror says which."""
    flags |= os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):  # EMLINK: the BSDs
            raise OSError(e.errno, "it is a symbolic link, which charrnn-tui never makes", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        why = None
        if not stat.S_ISREG(st.st_mode):
            why = "it is not a regular file"
        elif flags & (os.O_WRONLY | os.O_RDWR) and st.st_uid != os.geteuid():
            why = f"it belongs to {_user(st.st_uid)}"
        elif flags & (os.O_WRONLY | os.O_RDWR) and st.st_nlink > 1:
            why = "it has other hard links"
        if why is not None:
            raise OSError(errno.EPERM, why, str(path))
        os.set_blocking(fd, True)  # a regular file: O_NONBLOCK was only for the open
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_run_file(path: Path, limit: int) -> tuple[bytes | None, str | None]:
    """A small file of a run folder: (its bytes, None), (None, None) when there is none, or (None,
    why) when it is no regular file, is over `limit` bytes or cannot be read. Never blocks, never
    raises: another run's files may be anything."""
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):  # a FIFO or a device is never even opened
            return None, f"{path.name} is {_kind(mode)}, not a regular file"
        fd = open_in_run(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"{path.name}: {e.strerror or e}"
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        return None, f"{path.name}: {e.strerror or e}"
    finally:
        os.close(fd)
    if size > limit:
        return None, f"{path.name} is larger than {limit // 1024} KB"
    return b"".join(chunks), None


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(mode)), "not a file")


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
        require_safe_runs_dir(runs_dir)
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
    """Refuse at once an unsafe runs folder, or a --name that is taken (the engine refuses them too,
    without a race)."""
    require_safe_runs_dir(runs_dir)
    if name and (Path(runs_dir) / sanitize_run_name(name)).exists():
        raise ConfigError(name_taken_message(sanitize_run_name(name), runs_dir))


class RunLock:
    """An exclusive lock on a run folder, so two processes never write one run.

    flock is released by the OS when the process dies, so a killed run never leaves a stale lock.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.handle: TextIO | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not on POSIX: no lock, as before
            return self
        name = printable_line(self.path.parent.name)
        try:
            # Not through a symbolic link: a planted .lock -> a file of yours would be overwritten.
            fd = open_in_run(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise CheckpointError(f"cannot lock run {name}: {self.path} is unusable ({e.strerror or e}); "
                                  "remove it if no run is using it") from None
        handle = os.fdopen(fd, "r+", encoding="utf-8", errors="replace")  # held open for the life of the run
        for attempt in range(5):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt < 4:  # `runs` may be probing it for a moment (is_live)
                    time.sleep(0.1)
                    continue
                handle.seek(0)
                owner = handle.read(64).strip()
                owner = owner if re.fullmatch(r"process \d{1,10}", owner) else "another process"
                handle.close()
                raise CheckpointError(f"run {name} is in use by {owner}; stop it first") from None
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


def replace_atomically(path: Path, write: Callable[[BinaryIO], object], *, durable: bool = True) -> None:
    """Write `path` whole or not at all: `write` fills a new file beside it, which is renamed over
    `path`, so a reader or a kill at any moment finds the old file or the new one. `durable`: fsynced
    before the rename and the rename fsynced in its folder, so that a power cut does too (checkpoints,
    sweep.json; a status rewritten every few seconds need not be). Raises OSError, the new file
    removed whatever went wrong (a KeyboardInterrupt half way included)."""
    # A name of its own per write (mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW, user-only, like the run
    # folder): two writers never truncate each other's file, and a file or a symbolic link planted
    # under a name someone could guess is never written through. `.NAME.tmp-*` is the name
    # remove_partial_writes clears.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    if durable:
        fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; not possible on every platform, and harmless to skip there."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        os.link(latest, copy, follow_symlinks=False)
    except OSError:
        return
    # By the step in the name, not the name: step-10000000.pt sorts before step-9999999.pt as text.
    copies = [(int(m.group(1)), p) for p in latest.parent.glob("step-*.pt")
              if (m := re.fullmatch(r"step-(\d{1,20})\.pt", p.name))]
    for _, old in sorted(copies)[:-keep]:
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
        named = named_run(ref, runs_dir)
        if is_bare_name(ref) and named.is_dir():
            return _latest_in_run(named, runs_dir)  # a run's name wins over a folder of that name here
        path = Path(ref).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            return _latest_in(path)
        if named.is_dir():
            return _latest_in_run(named, runs_dir)
        check_runs_dir(runs_dir)
        raise CheckpointError(f"{ref}: no such checkpoint, run folder or run name in {runs_dir}")
    check_runs_dir(runs_dir)
    # Only your own runs: in a shared folder, another user's newest run is never taken for yours.
    runs = []
    for folder in run_folders(runs_dir):
        with contextlib.suppress(OSError):
            st = os.lstat(folder / LATEST)
            if stat.S_ISREG(st.st_mode):
                runs.append((st.st_mtime, folder / LATEST))
    if not runs:
        raise CheckpointError(f"no runs to resume in {runs_dir}")
    return max(runs)[1]


def _latest_in_run(folder: Path, runs_dir: Path) -> Path:
    """latest.pt of a run named in the runs folder: a safe folder, and a run of your own."""
    require_safe_runs_dir(runs_dir)
    require_own_run_dir(folder)
    return _latest_in(folder)


def _latest_in(folder: Path) -> Path:
    path = folder / LATEST
    if not path.is_file():
        raise CheckpointError(no_checkpoint_message(folder))
    return path


def resolve_run(ref: str | None, runs_dir: Path, *, live: bool) -> Path:
    """A run folder from a name or a path; with no name, the most recently active live run."""
    if ref is None:
        check_runs_dir(runs_dir)
        candidates = [e for e in list_runs(runs_dir) if e.live] if live else list_runs(runs_dir)
        if not candidates:
            raise CharRNNError(f"no live runs in {runs_dir}; `{command_hint('runs', runs_dir)}` lists them all")
        return candidates[0].path
    named = named_run(ref, runs_dir)
    if is_bare_name(ref) and named.is_dir():
        require_own_run_dir(named)
        return named  # a run's name wins over a folder of that name where the command was typed
    path = Path(ref).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        path = named
    if not path.is_dir():
        check_runs_dir(runs_dir)
        raise CharRNNError(f"{ref}: no such run in {runs_dir}; `{command_hint('runs', runs_dir)}` lists them")
    require_own_run_dir(path)  # another user's run (or a link to one) is never attached to or stopped
    return path


ENDED = {"crashed": "crashed", "error": "ended with an error", "stopped": "was stopped", "finished": "finished",
         UNREADABLE: "left files that cannot be read"}


def no_checkpoint_message(folder: Path) -> str:
    """Why a run folder has no latest.pt yet, and what to do: a live run saves one soon (or now,
    asked); one that ended before its first save has nothing to load."""
    entry = run_entry(folder)
    if entry is None:
        return f"{folder}: run folder has no {LATEST}"
    if entry.problem is not None:
        return f"{folder}: run folder has no {LATEST} (and {entry.problem})"
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


def not_live_message(run_dir: Path) -> str:
    """Why a run cannot be attached to or stopped: it ended (how, at which step), and how to go on."""
    if is_live(run_dir):  # its engine holds it but has not opened its socket yet
        return f"run {run_dir.name} is starting; try again in a moment"
    entry = run_entry(run_dir)
    if entry is None:
        return f"{run_dir}: not a run (no status.json, no {LATEST})"
    it = f"it {ENDED.get(entry.state, entry.state)}" + ("" if entry.step is None else f" at step {entry.step:,}")
    if not (run_dir / LATEST).is_file():
        return f"run {entry.name} is not running: {it} before saving a checkpoint, so there is nothing to continue"
    resume = f"`{run_hint('train --resume', run_dir)}` continues it"
    if entry.state == "crashed":
        return f"run {entry.name} is not running: {it} (its engine is gone); {resume} from its last checkpoint"
    return f"run {entry.name} is not running: {it}; {resume}"


def is_live(run_dir: Path) -> bool:
    """Whether an engine holds the run's lock now. The kernel drops a dead process's lock, so a
    run killed with kill -9 (or a reboot) reads as not live, whatever files it left."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: trust the socket file
        return (run_dir / SOCKET).exists()
    lock = run_dir / ".lock"
    try:
        # An engine's lock is a regular file; a FIFO or a link planted there is nobody's lock.
        if not stat.S_ISREG(os.lstat(lock).st_mode):
            return False
        fd = open_in_run(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    """status.json, replaced atomically: a reader never sees half of it."""
    status = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in status.items()}
    data = json.dumps(status).encode()
    with contextlib.suppress(OSError):  # a status is rewritten every few seconds: the next one may land
        replace_atomically(run_dir / STATUS, lambda f: f.write(data), durable=False)


def load_status(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """status.json as an object: (it, None), (None, None) when there is none, or (None, why) when it
    cannot be read. Never blocks and never raises, whatever is there: engines read their sibling
    runs' files, and `runs` everybody's."""
    data, problem = read_run_file(run_dir / STATUS, STATUS_LIMIT)
    if data is None:
        return None, problem
    try:
        status = json.loads(data)
    except RecursionError:  # [[[[...: json recurses once per bracket
        return None, f"{STATUS} is nested too deeply"
    except ValueError:  # not JSON, not UTF-8, or an integer of thousands of digits
        return None, f"{STATUS} is not valid JSON"
    if not isinstance(status, dict):
        return None, f"{STATUS} is not a JSON object"
    return status, None


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json's object, or {} when there is none or it cannot be read (load_status says why)."""
    return load_status(run_dir)[0] or {}


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
    problem: str | None = None  # why a run is `unreadable`: which of its files is bad, and how

    @property
    def model_label(self) -> str:
        """The model as `runs` shows it, with the processes that train it when more than one."""
        label = self.model or "-"
        return f"{label} ({self.world_size} ranks)" if self.world_size > 1 else label

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "state": self.state, "live": self.live, "step": self.step,
                "best_val": self.best_val, "corpus": self.corpus, "model": self.model, "viewers": self.viewers,
                "updated": self.updated, "tokens": self.tokens,
                "world_size": self.world_size, "problem": self.problem}


def list_runs(runs_dir: Path) -> list[RunEntry]:
    """Every run in the folder, most recently active first, with its state as its files and lock
    tell it: a run whose status says it was training but whose engine holds no lock crashed."""
    entries = [entry for folder, name in runs_and_trials(runs_dir) if (entry := run_entry(folder, name)) is not None]
    return sorted(entries, key=lambda e: e.updated, reverse=True)


def run_entry(folder: Path, name: str | None = None) -> RunEntry | None:
    """One run as `runs` lists it; None for a folder that is no run (no status, no checkpoint). A
    run whose status.json is bad (not a file, too big, not JSON, a field of the wrong kind) is
    listed as `unreadable`, with why: one bad folder never takes the listing down. `name`: as listed
    (a sweep's trial is SWEEP/TRIAL; default the folder's name)."""
    name = name or folder.name
    status, problem = load_status(folder)
    if status is None and problem is None and not os.path.lexists(folder / LATEST):
        return None
    status = status or {}
    try:
        times = [os.lstat(p).st_mtime for p in (folder / STATUS, folder / LATEST) if os.path.lexists(p)]
        updated = max(times, default=os.lstat(folder).st_mtime)
    except OSError:  # removed while we looked
        return None
    live = is_live(folder)
    fields: dict[str, Any] = {}
    if problem is None:
        fields, problem = _status_fields(status)
    if problem is not None:
        return RunEntry(name=name, path=folder, state=UNREADABLE, live=live, step=None,
                        best_val=None, corpus=None, model=None, viewers=0, updated=updated, problem=problem)
    state = fields["state"] or "stopped"
    if live and state not in LIVE_STATES:
        state = "starting"
    elif not live and state in LIVE_STATES:
        state = "crashed"
    return RunEntry(
        name=name, path=folder, state=state, live=live, step=fields["step"],
        best_val=fields["best_val"], corpus=fields["corpus"], model=fields["model"],
        viewers=(fields["viewers"] or 0) if live else 0, updated=updated,
        tokens=status.get("tokens") if status.get("tokens") in ("char", "word") else None,
        world_size=fields["world_size"] or 1,
    )


def _status_fields(status: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The fields `runs` shows, each checked (a missing one is None), or why one is bad."""
    fields: dict[str, Any] = {}
    checks = (("state", _text_or_none, "is not text"), ("step", _int_or_none, "is not a whole number"),
              ("best_val", finite_or_none, "is not a number"), ("corpus", _text_or_none, "is not text"),
              ("model", _text_or_none, "is not text"), ("viewers", _int_or_none, "is not a whole number"),
              ("world_size", _int_or_none, "is not a whole number"))
    for key, check, wrong in checks:
        value = status.get(key)
        fields[key] = check(value)
        if value is not None and fields[key] is None and not (key == "best_val" and _is_number(value)):
            return fields, f"{STATUS}: {key} {wrong} ({_describe(value)})"
    if fields["world_size"] == 0:
        return fields, f"{STATUS}: world_size is 0"
    return fields, None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    """A count from a file: a whole number from 0 to MAX_COUNT (a float of one, as JSON may write
    it), else None. Never int(inf) or int(nan), which raise."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return value if type(value) is int and 0 <= value <= MAX_COUNT else None


def finite_or_none(value: Any) -> float | None:
    """A finite number read from a file, else None; JSON's Infinity or NaN (an old run's best_val)
    is no best yet. Run comparison reads metrics.jsonl through it too."""
    if not _is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _text_or_none(value: Any) -> str | None:
    """Text, cut to TEXT_LIMIT characters (shown through printable_line wherever it is shown)."""
    if not isinstance(value, str):
        return None
    return value if len(value) <= TEXT_LIMIT else value[: TEXT_LIMIT - 3] + "..."


def _describe(value: Any) -> str:
    """A bad value from a file, briefly and printably."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else {"inf": "Infinity", "-inf": "-Infinity"}.get(repr(value), "NaN")
    if isinstance(value, int):
        return str(value) if value.bit_length() < 64 else f"a number of {len(str(value))} digits"
    if isinstance(value, str):
        return repr(printable_line(value[:40]))
    kinds: dict[type, str] = {dict: "an object", list: "a list"}
    return kinds.get(type(value), type(value).__name__)


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
