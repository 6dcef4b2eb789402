"""Optuna's successive halving against engine/tune/halving.py, on synthetic losses: what `tune`
would gain by depending on Optuna (docs/DEVELOPING.md, "Tuning", says what was found).

    pip install optuna && python bench/optuna_halving.py

Nine trials of a 3-rung plan report one after another, the best arriving last (loss 2.0 - 0.01 t
at every rung), into an Optuna study on SQLite storage (what survives an interruption) with
SuccessiveHalvingPruner (reduction factor 3), and into halving.Halving. Prints the time of each,
which trials each sends on, and the state Optuna gives a trial asked for and never told (a tune
killed while that trial trained) once the study is loaded again.
"""

from __future__ import annotations

import os
import tempfile
import time

from charrnn_tui.engine.tune.halving import Halving, Plan

RUNGS = (1, 3, 9)


def loss(trial: int, rung: int) -> float:
    return 2.0 - 0.2 * rung - 0.01 * trial


def with_optuna(path: str) -> tuple[float, float, dict[int, list[int]], str]:
    started = time.perf_counter()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    imported = time.perf_counter() - started
    storage = f"sqlite:///{path}"
    study = optuna.create_study(storage=storage, study_name="tune", direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(
                                    min_resource=1, reduction_factor=3, min_early_stopping_rate=0))
    promoted: dict[int, list[int]] = {0: [], 1: []}
    for t in range(9):
        trial = study.ask({"hidden": optuna.distributions.IntDistribution(32, 512, step=32)})
        for rung, step in enumerate(RUNGS):
            trial.report(loss(t, rung), step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
            if rung + 1 < len(RUNGS):
                promoted[rung].append(t)
        else:
            study.tell(trial, loss(t, len(RUNGS) - 1))
    interrupted = study.ask()
    interrupted.report(1.0, 1)
    left = optuna.load_study(study_name="tune", storage=storage).trials[-1].state.name
    return imported, time.perf_counter() - started - imported, promoted, left


def with_halving() -> tuple[float, dict[int, list[int]]]:
    started = time.perf_counter()
    h = Halving(Plan(RUNGS, 9))
    while (job := h.next_job()) is not None:
        trial, rung = job
        h.report(trial, rung, loss(trial, rung))
    return time.perf_counter() - started, {0: sorted(h.promoted[0]), 1: sorted(h.promoted[1])}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        imported, spent, promoted, left = with_optuna(os.path.join(folder, "study.db"))
    print(f"optuna: import {imported:.2f} s; study on SQLite and 9 trials {spent:.2f} s; sent on from rung 1: "
          f"{promoted[0]}, from rung 2: {promoted[1]}; a trial never told, after a reload: {left}")
    spent, promoted = with_halving()
    print(f"halving.py: {spent * 1000:.2f} ms; sent on from rung 1: {promoted[0]}, from rung 2: {promoted[1]}")


if __name__ == "__main__":
    main()
