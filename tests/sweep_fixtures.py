"""A sweep.json as `tune` writes it (engine/tune/sweep.py's own writer), with trials in every state,
and their validation curves: for the app's leaderboard, without training anything."""

from __future__ import annotations

import json
import math
from pathlib import Path

from charrnn_tui.engine.tune.halving import Plan
from charrnn_tui.engine.tune.space import default_settings, search_space
from charrnn_tui.engine.tune.sweep import SweepState, Trial, next_settings, save

RUNGS = (30_000, 90_000)
# Trial 1 and 2 finish rung 1 and 2 goes on; 3 is pruned; 4 diverged; 5 runs rung 1; 6 failed.
RUNG_1 = {0: 2.31, 1: 2.05, 2: 2.62, 3: math.nan, 5: None}


def make_sweep(folder: Path, *, ended: bool = True, curves: bool = True) -> SweepState:
    """Trials 1-6 of a 6-trial plan on two rungs; `ended`: trial 2 finished rung 2 and won;
    `curves`: each trial's folder with its validation curve."""
    space = search_space("tiny", 2_700, 2_400, "char", RUNGS[-1])
    state = SweepState(corpus="abc", data_argv=["/x/abc.txt"], preset="tiny", budget_s=600.0,
                       plan=Plan(RUNGS, 6), space=space, seed=3, slots=2, machine_argv=["--threads", "1"],
                       default=default_settings(space, 2_700), spent_s=312.0)
    h = state.decisions
    for _ in range(6):
        trial_id, _rung = h.next_job()  # type: ignore[misc]
        state.trials.append(Trial(trial_id, f"trial-{trial_id + 1:02d}", next_settings(state)))
    for trial_id, loss in RUNG_1.items():
        h.report(trial_id, 0, loss)
        state.trials[trial_id].steps = state.steps_for(state.trials[trial_id], 0)
    if ended:
        assert h.next_job() == (1, 1), "the best of rung 1 goes on"
        h.report(1, 1, 1.87)
        state.trials[1].steps = state.steps_for(state.trials[1], 1)
        state.winner = {"trial": "trial-02", "rung": 1, "val_loss": 1.87, "checkpoint": "-", "command": "-"}
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    save(folder, state)
    for trial in state.trials if curves else ():
        write_curve(folder / trial.name, trial.id)
    return state


def write_curve(run_dir: Path, seed: int) -> None:
    """A trial's metrics.jsonl: validation points falling from 3.5, a little apart for each trial."""
    run_dir.mkdir(mode=0o700, exist_ok=True)
    lines = [json.dumps({"step": s, "val_loss": 1.6 + (1.9 + 0.1 * seed) * math.exp(-s / 40) + 0.05 * seed,
                         "elapsed_s": s * 0.1, "tokens": s * 600}) for s in range(10, 160, 10)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
