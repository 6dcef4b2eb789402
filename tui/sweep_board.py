"""A sweep's leaderboard as the app shows it, read from its sweep.json (engine/tune/sweep.py).

Plain Python, no widgets, no torch. The file is anything its folder holds: it is read bounded
(runs.read_run_file: no symbolic link, no FIFO, at most SWEEP_LIMIT bytes) and every field used is
checked; a file that fails any check is one line of why (`Board.problem`), never an exception.

The order is the one `tune` prints its table in: the highest rung reached first, then the
validation loss there (a diverged or failed trial last), then the trial started first."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charrnn_tui.engine.runs import MAX_COUNT, SWEEP, SWEEP_LIMIT, is_live, read_run_file, read_status

MAX_TRIALS = 1000  # a plan has at most 81; more is no sweep of ours
TEXT_LIMIT = 60  # characters kept of a name or a setting's text
LIVE_STATES = ("running", "promoted")  # the sweep means these to train: their folders are probed for an engine


class Unreadable(ValueError):
    """A field of sweep.json that is missing or not what a sweep writes."""


@dataclass(frozen=True)
class TrialRow:
    name: str  # its run folder in the sweep's
    model: str  # `lstm 2x256`
    dropout: float
    lr: float
    seq_len: int
    tokens: int | None  # tokens trained on: by its engine's last status while it trains, else its last job's
    val: float | None  # best validation loss by its highest rung (the rung's judgement); inf where it diverged
    state: str  # training, starting, stopped, waiting, promoted, pruned, finished, diverged, failed, pending
    rung: int | None  # its highest rung reached (0-based)
    live: bool = False  # an engine trains it now
    run: str = ""  # the folder it trains in or its result is in, where not its own: its finale's or continuation's

    @property
    def folder(self) -> str:
        """Its run's folder in the sweep's: the one to attach, chart and sample."""
        return self.run or self.name


@dataclass(frozen=True)
class Board:
    name: str
    rows: list[TrialRow] = field(default_factory=list)
    problem: str | None = None  # why sweep.json cannot be read: the board is this one line
    planned: int = 0  # trials the plan has room for
    rungs: tuple[int, ...] = ()  # tokens at each rung
    spent_s: float = 0.0
    budget_s: float = 0.0
    winner: str | None = None  # the winning trial's name, once the sweep has ended
    continued: bool = False  # the winner trains on as an ordinary run (`tune --continue`)

    def row(self, name: str) -> TrialRow | None:
        return next((r for r in self.rows if r.name == name), None)


def read_board(folder: Path, *, probe: bool = True) -> Board:
    """The sweep in `folder` as rows, best first. `probe`: look for the engines of the trials the
    sweep means to train (their folders' locks, their status for the tokens so far)."""
    data, problem = read_run_file(folder / SWEEP, SWEEP_LIMIT)
    if data is None:
        return Board(folder.name, problem=problem or f"no {SWEEP}")
    try:
        raw = json.loads(data)
    except RecursionError:
        return Board(folder.name, problem=f"{SWEEP} is nested too deeply")
    except ValueError:
        return Board(folder.name, problem=f"{SWEEP} is not valid JSON")
    try:
        return _board(folder, raw, probe)
    except Unreadable as e:
        return Board(folder.name, problem=f"{SWEEP}: {e}")


def _board(folder: Path, raw: Any, probe: bool) -> Board:
    sweep = _dict(raw, "the file")
    plan = _dict(sweep.get("plan"), "plan")
    rungs = tuple(_count(r, "a rung") for r in _list(plan.get("rungs"), "plan.rungs", 16))
    reports = [{_trial_key(t): _loss(v)
                for t, v in _dict(rung, "a rung's reports").items()}
               for rung in _list(sweep.get("reports"), "reports", len(rungs))]
    loop_live = probe and is_live(folder)  # the sweep's loop holds its folder's lock while it runs
    winner = sweep.get("winner")
    winner = winner if isinstance(winner, dict) else {}
    winner_name = _text(winner["trial"], "the winner") if "trial" in winner else None
    continued = winner.get("continued") is True  # the winner trains on (`--continue`): its folder is probed too
    finale = sweep.get("finale")  # the plan done, the winner trains on for the budget left: probed, its loss kept
    finale = finale if isinstance(finale, dict) else {}
    finale_id = finale.get("trial") if type(finale.get("trial")) is int else None
    finale_loss = _loss(finale.get("loss")) if finale.get("done") is True and finale.get("loss") is not None else None
    finale_run = _folder(finale["run"], "the finale's run") if "run" in finale else None  # TRIAL-final: afresh
    winner_run = _folder(winner["run"], "the winner's run") if "run" in winner else None
    rows = []
    for i, item in enumerate(_list(sweep.get("trials"), "trials", MAX_TRIALS)):
        trial = _dict(item, f"trial {i + 1}")
        settings = _dict(trial.get("settings"), f"trial {i + 1}'s settings")
        trial_id, name = _count(trial.get("id"), "a trial's id"), _folder(trial.get("name"), "a trial's name")
        steps = _count(trial.get("steps"), f"{name}'s steps")
        step_tokens = _count(settings.get("batch_size"), f"{name}'s batch") * _count(settings.get("seq_len"),
                                                                                     f"{name}'s window")
        rung = next((k for k in reversed(range(len(reports))) if trial_id in reports[k]), None)
        state = _text(trial.get("state", "pending"), f"{name}'s state")
        live, tokens = False, steps * step_tokens if steps else None
        probed = state in LIVE_STATES or (continued and name == winner_name) or trial_id == finale_id
        run = name  # where it trains: its finale's or its continuation's folder where that is another
        if trial_id == finale_id and finale_run:
            run = finale_run
        if continued and name == winner_name and winner_run:
            run = winner_run
        if probe and probed and is_live(folder / run):
            live, state = True, "training"
            step = read_status(folder / run).get("step")
            if type(step) is int and 0 < step <= MAX_COUNT:
                tokens = step * step_tokens
        elif state == "running":  # meant to train: its engine is starting, or (no loop) `tune --resume` resumes it
            state = "starting" if loop_live else "stopped"
        val = reports[rung][trial_id] if rung is not None else None
        if trial_id == finale_id and val is not None and finale_loss is not None:
            fresh = finale_run not in (None, name) and type(finale.get("steps")) is int
            if fresh and finale_loss <= val and not live:  # its settings' fresh run is its result
                tokens = _count(finale["steps"], "the finale's steps") * step_tokens
            elif run == finale_run and finale_loss > val:  # it did worse: the trial's own folder is the result
                run = name
            val = min(val, finale_loss)
        rows.append(TrialRow(name, _model(settings, name), _number(settings.get("dropout"), f"{name}'s dropout"),
                             _number(settings.get("lr"), f"{name}'s lr"), _count(settings.get("seq_len"), name), tokens,
                             val, state, rung, live, run if run != name else ""))
    if len({r.name for r in rows}) < len(rows):
        raise Unreadable("two trials have the same name")
    rows.sort(key=_order)
    return Board(folder.name, rows, planned=_count(plan.get("trials"), "plan.trials"), rungs=rungs,
                 spent_s=_seconds(sweep.get("spent_s"), "spent_s"),
                 budget_s=_seconds(sweep.get("budget_s"), "budget_s"),
                 winner=winner_name, continued=continued)


def _order(row: TrialRow) -> tuple[int, float, str]:
    loss = row.val if row.val is not None and math.isfinite(row.val) else math.inf
    return (-(row.rung if row.rung is not None else -1), loss, row.name)


def _model(settings: dict[str, Any], name: str) -> str:
    """`lstm 2x256`, as `tune`'s table writes it, from checked fields."""
    kind = _text(settings.get("kind"), f"{name}'s model")
    layers = _count(settings.get("layers"), f"{name}'s layers")
    return f"{kind} {layers}x{_count(settings.get('hidden'), f'{name} width')}"


# ---- checked fields --------------------------------------------------------------------------------
def _folder(value: Any, what: str) -> str:
    """A folder's name in the sweep's (a trial's, a finale's run): not a path, not . or .."""
    name = _text(value, what)
    if Path(name).name != name or name in ("", ".", ".."):
        raise Unreadable(f"{what} is not a folder's name: {name!r}")
    return name


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Unreadable(f"{what} is not an object")
    return value


def _list(value: Any, what: str, most: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > most:
        raise Unreadable(f"{what} is not a list of at most {most}")
    return value


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise Unreadable(f"{what} is not a whole number from 0 to 2^53")
    return value


def _number(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise Unreadable(f"{what} is not a finite number")
    return float(value)


def _seconds(value: Any, what: str) -> float:
    seconds = _number(value, what)
    if seconds < 0:
        raise Unreadable(f"{what} is negative")
    return seconds


def _trial_key(key: str) -> int:
    """A report's trial id, written as a JSON key ("3")."""
    if not (key.isascii() and key.isdigit() and len(key) <= 16):
        raise Unreadable(f"a report's trial is not a trial's number: {key[:20]!r}")
    return int(key)


def _loss(value: Any) -> float | None:
    """A reported loss: a number, "diverged" (inf), or None (the trial failed)."""
    if value is None:
        return None
    if value == "diverged":
        return math.inf
    return _number(value, "a reported loss")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > TEXT_LIMIT:
        raise Unreadable(f"{what} is not a text of at most {TEXT_LIMIT} characters")
    return value
