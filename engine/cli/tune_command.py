"""`charrnn-tui tune CORPUS --budget 20m`: search width, layers, dropout, learning rate (and the
window where it matters) for a corpus under a wall-clock budget, by successive halving
(engine/tune/). Each trial is an ordinary run in the sweep's folder under the runs folder; a line
is printed per trial event, and at the end the table and the winner's `charrnn-tui train` command.
`--resume` continues an interrupted sweep; `--continue` carries the winner on as an ordinary run.
Without --headless the sweep is made here and its loop runs detached (`start_sweep_driver`), watched
by the app (tui/widgets/sweep_screen.py)."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.cli.arguments import parse_duration
from charrnn_tui.engine.durations import duration
from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.printable import printable_line

if TYPE_CHECKING:  # torch: imported when a sweep is made, not to parse arguments
    from charrnn_tui.engine.tune.sweep import Sweep, SweepState, Trial

FIRST_RUNG_STEPS = 250  # steps of the default trial's batch in the first rung: past the warm-up, and
# far enough that the losses of two settings part (the small preset's warm-up is 50 steps)
JOB_SECONDS = 4.0  # an engine's start-up (torch, the corpus, the model) and its final save, measured:
# 3.9 s of CPU for a 1-step run of the tiny preset on 2 cores; counted against the budget per job
PROBE_SECONDS = 2.0
TOP_EPOCHS = 4  # a plan whose top rung trains fewer epochs of the text than this searches for only SEARCH_SHARE
SEARCH_SHARE = 0.4  # of the budget, and its winner trains on for the rest (the finale, on all the cores): on
# tiny-shakespeare, 10 minutes on 2 cores, 26 trials left a top rung of 2.4 epochs and its winner (the default's
# settings) at 1.4925, where one default run of the same 10 minutes trained 12.8M tokens to 1.4112
GPU_TRIALS = 3  # trials at once on one GPU: a small RNN's steps leave it mostly idle (on paper: not measured)
MOST_CPU_SLOTS = 8


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    from charrnn_tui.engine.cli.arguments import add_runs_dir_argument, whole_number
    from charrnn_tui.engine.cli.tune_ranges import add_range_arguments

    parser.add_argument("corpus", nargs="?", default=None, metavar="CORPUS",
                        help="text file, folder, CSV file or bundled corpus (default: shakespeare)")
    parser.add_argument("--budget", type=parse_duration, metavar="DURATION",
                        help="wall-clock time for the whole sweep, e.g. 20m, 1h (with --resume: how much more)")
    parser.add_argument("--headless", action="store_true",
                        help="print a line per trial event and the table at the end (default: the app's "
                             "leaderboard, the sweep running in the background)")
    parser.add_argument("--continue", dest="continue_on", action="store_true",
                        help="when the sweep ends, the winner trains on as an ordinary run until stopped "
                             "(`train --resume SWEEP/TRIAL --max-time 0`)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="SWEEP",
                        help="continue the latest sweep, or the one named")
    parser.add_argument("--name", metavar="NAME", help="the sweep's folder name (default: tune-CORPUS-time)")
    parser.add_argument("--preset", choices=[*cfg.PRESETS, "auto"], default="auto",
                        help="the preset the space is centred on (default: auto, by device)")
    parser.add_argument("--device", choices=cfg.DEVICES, default="auto")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="the sampler's seed (default: 0)")
    parser.add_argument("--parallel", type=lambda t: whole_number(t, 1), metavar="N",
                        help="trials at once (default: one per core on a CPU, a few on one GPU, one per GPU)")
    parser.add_argument("--first-rung", type=lambda t: whole_number(t, 1), default=FIRST_RUNG_STEPS,
                        metavar="STEPS", help="the least steps of the first rung, at the default trial's batch "
                                              f"(default: {FIRST_RUNG_STEPS})")
    add_range_arguments(parser)
    data = parser.add_argument_group("data (as for train)")
    data.add_argument("--csv-column", metavar="NAME")
    data.add_argument("--as-text", action="store_true")
    data.add_argument("--ascii", action="store_true")
    data.add_argument("--encoding", metavar="NAME")
    data.add_argument("--tokens", choices=cfg.TOKEN_KINDS, default="char")
    add_runs_dir_argument(parser)


def run_tune(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from charrnn_tui.engine.run.threads import available_cores
    from charrnn_tui.engine.runs import RunLock, default_runs_dir
    from charrnn_tui.engine.tune.sweep import Sweep, save

    runs_dir = args.runs_dir or default_runs_dir()
    if args.resume is not None:
        folder, state = resumed_sweep(args, runs_dir)
    else:
        folder, state = new_sweep(args, runs_dir, out)
        save(folder, state)

    def say(line: str) -> None:
        clock = duration(state.spent_s)  # the sweep's clock, across resumes
        out.write(printable_line(f"[{clock}] {line}") + "\n")
        out.flush()

    lock = RunLock(folder).acquire()  # one tune at a time on a sweep: a second --resume is refused
    sweep = Sweep(folder, state, say, env_for_slot=gpu_for_slot(state.machine_argv), cores=available_cores())
    handle_signals(sweep, folder)
    say(f"sweep {folder.name}: {state.plan.trials} trials, rungs of {rung_words(state.plan.rungs)} tokens, "
        f"{state.slots} at once, budget {duration(state.budget_s)} ({duration(state.spent_s)} spent)")
    say(f"space: {state.space.describe()}")
    try:
        ended = sweep.run()
    finally:
        lock.release()
    say(f"sweep {ended}")
    out.write(table(sweep) + "\n")
    write_winner(sweep, out)
    if ended == "interrupted":
        out.write(f"continue it: {resume_hint(folder)}\n")
        return 130
    if args.continue_on and state.winner is not None:
        continue_winner(folder, state, out)  # does not return
    return 0


def continue_winner(folder: Path, state: SweepState, out: TextIO) -> None:
    """`--continue`: this process becomes the winner's `train --resume ... --headless` (exec: the
    same terminal or tune.log, Ctrl+C saves and stops it as any headless run), after sweep.json has
    said so, so that the app watching the sweep attaches to it."""
    from charrnn_tui.engine.run.threads import available_cores
    from charrnn_tui.engine.runs import command_hint
    from charrnn_tui.engine.tune.sweep import continuation_argv, save

    assert state.winner is not None, "a sweep with a winner"
    trial = str(state.winner.get("run") or state.winner["trial"])  # the finale's folder where it trained afresh
    argv = continuation_argv(folder, trial, state.machine_argv, available_cores())
    state.winner["continued"] = True
    save(folder, state)
    again = command_hint(f"train --resume {folder.name}/{trial} --max-time 0", folder.parent)
    out.write(printable_line(f"the winner trains on as an ordinary run: `{again}`; Ctrl+C saves and stops it") + "\n")
    out.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "charrnn_tui.engine", "train", *argv, "--headless"])


def new_sweep(args: argparse.Namespace, runs_dir: Path, out: TextIO) -> tuple[Path, SweepState]:
    """Measure, plan and make the sweep's folder: (folder, SweepState)."""
    from charrnn_tui.engine.cli.tune_ranges import limits_from
    from charrnn_tui.engine.model.device import pick_device
    from charrnn_tui.engine.run.threads import available_cores
    from charrnn_tui.engine.runs import check_new_run_name, new_run_dir
    from charrnn_tui.engine.text.corpus import corpus_spec, load_corpus
    from charrnn_tui.engine.text.vocab import build_vocab
    from charrnn_tui.engine.tune.halving import FIRST_RUNG_SHARE, plan
    from charrnn_tui.engine.tune.space import default_settings, empty_reason, search_space, within_limits
    from charrnn_tui.engine.tune.speed import training_speed
    from charrnn_tui.engine.tune.sweep import SweepState

    if args.budget is None:
        raise ConfigError("tune needs --budget (e.g. --budget 20m): the wall-clock time the sweep may take")
    check_new_run_name(args.name, runs_dir)
    began = time.monotonic()
    corpus = load_corpus(corpus_spec(args.corpus), csv_column=args.csv_column, ascii_only=args.ascii,
                         encoding=args.encoding, csv_as_text=args.as_text)
    device = pick_device(args.device)
    preset = cfg.preset_for_device(device.type) if args.preset == "auto" else args.preset
    vocab = build_vocab(corpus.text, args.tokens, cfg.TrainConfig().min_freq)
    tokens = len(vocab.encode(corpus.text))
    train_tokens = int(tokens * (1 - cfg.TrainConfig().val_fraction))
    slots, threads, gpus = machine_shares(device.type, args.parallel, available_cores())
    limits = limits_from(args)
    rough = search_space(preset, len(corpus.text), train_tokens, args.tokens, 0, limits)
    if reason := empty_reason(rough, limits, weights=False):
        raise ConfigError(reason)
    # The default run's model is timed whatever the ranges: it is the machine's speed the plan needs
    # (a model of the user's may be too big to probe), and re-plans follow what the trials really take.
    reference = default_settings(rough, len(corpus.text))
    speed = training_speed(reference, len(vocab), preset=preset, device_name=args.device, threads=threads,
                           seconds=PROBE_SECONDS)
    left = args.budget - (time.monotonic() - began)
    first_rung = args.first_rung * reference.step_tokens
    the_plan = plan(speed * left, first_rung, slots=slots, job_tokens=speed * JOB_SECONDS)
    searched = None
    if the_plan is not None and the_plan.rungs[-1] < TOP_EPOCHS * train_tokens:  # a text big for the budget
        searched = plan(speed * left * SEARCH_SHARE, first_rung, slots=slots, job_tokens=speed * JOB_SECONDS)
        the_plan = searched or the_plan
    if the_plan is None:
        job = first_rung / speed + JOB_SECONDS
        raise ConfigError(f"a budget of {duration(args.budget)} is too short for two trials: a first-rung job takes "
                          f"{job:.1f} s here ({args.first_rung} steps of {reference.step_tokens:,} tokens at "
                          f"{speed:,.0f} tokens/s, measured, and start-up) and may take {FIRST_RUNG_SHARE:.0%} of "
                          f"the budget; give --budget {math.ceil(job / FIRST_RUNG_SHARE + args.budget - left) + 1}s "
                          "or more")
    space = search_space(preset, len(corpus.text), train_tokens, args.tokens, the_plan.rungs[-1], limits)
    if reason := empty_reason(space, limits):
        raise ConfigError(reason)
    first = within_limits(space, reference, limits)
    name = args.name or f"tune-{corpus.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = new_run_dir(runs_dir, name, exact=bool(args.name))
    machine = ["--threads", str(threads)] + (["--device", args.device] if args.device != "auto" else [])
    out.write(printable_line(f"measured {speed:,.0f} tokens/s for {reference.label()} on {threads} thread"
                             f"{'s' if threads > 1 else ''} ({device.type}{f', {gpus} GPUs' if gpus > 1 else ''})")
              + "\n")
    if searched is not None:
        out.write(printable_line(f"the text is big for this budget (the top rung would train under {TOP_EPOCHS} epochs "
                                 f"of it): the search takes {SEARCH_SHARE:.0%} of the budget and its winner trains on "
                                 "for the rest") + "\n")
    if first != reference:
        out.write(printable_line(f"the first trial is the default run brought into the ranges given: {first.label()}")
                  + "\n")
    return folder, SweepState(corpus=corpus.name, data_argv=data_argv(args), preset=preset,
                              budget_s=args.budget, plan=the_plan, space=space, seed=args.seed, slots=slots,
                              machine_argv=machine, spent_s=time.monotonic() - began, default=first,
                              speed=speed, job_seconds=JOB_SECONDS)


def machine_shares(device_type: str, parallel: int | None, cores: int) -> tuple[int, int, int]:
    """(trials at once, CPU threads each, GPUs). A CPU: one trial per core (up to MOST_CPU_SLOTS),
    the cores split between them, as runs split them (engine/run/threads.py: two runs on one
    thread each beat two on both). One GPU: GPU_TRIALS at once. Several: one per GPU."""
    gpus = 0
    if device_type == "cuda":
        import torch

        gpus = torch.cuda.device_count()
    default = min(cores, MOST_CPU_SLOTS) if gpus == 0 else GPU_TRIALS if gpus == 1 else gpus
    slots = parallel or default
    return slots, max(1, cores // slots), gpus


def gpu_for_slot(machine_argv: list[str]) -> Callable[[int], dict[str, str] | None]:
    """The environment of each slot's trial: on several GPUs, one of them (CUDA_VISIBLE_DEVICES)."""
    import torch

    gpus = torch.cuda.device_count() if "cpu" not in machine_argv and torch.cuda.is_available() else 0

    def env(slot: int) -> dict[str, str] | None:
        if gpus < 2:
            return None
        return {**os.environ, "CUDA_VISIBLE_DEVICES": str(slot % gpus)}

    return env


def data_argv(args: argparse.Namespace) -> list[str]:
    """The corpus and its flags as every trial (and the winner's command) gets them."""
    from charrnn_tui.corpora import BUNDLED

    corpus = args.corpus
    if corpus is not None and corpus not in BUNDLED:
        corpus = str(Path(corpus).expanduser().absolute())
    words = [corpus] if corpus else []
    for flag, value in (("--csv-column", args.csv_column), ("--encoding", args.encoding)):
        if value is not None:
            words += [flag, value]
    words += ["--as-text"] * args.as_text + ["--ascii"] * args.ascii
    if args.tokens != "char":
        words += ["--tokens", args.tokens]
    return words


def resumed_sweep(args: argparse.Namespace, runs_dir: Path) -> tuple[Path, SweepState]:
    from charrnn_tui.engine.tune.sweep import load

    folder = find_sweep(args, runs_dir)
    state = load(folder)
    if args.budget is not None:
        state.budget_s = state.spent_s + args.budget
    elif state.spent_s >= state.budget_s:
        raise ConfigError(f"sweep {folder.name} has spent its budget of {duration(state.budget_s)}: give --budget "
                          "for more time")
    return folder, state


def find_sweep(args: argparse.Namespace, runs_dir: Path) -> Path:
    """The sweep `--resume [SWEEP]` names: a folder, a name in the runs folder, or the latest."""
    from charrnn_tui.engine.cli.tune_ranges import ranges_given
    from charrnn_tui.engine.runs import SWEEP, check_runs_dir, is_sweep_folder, run_folders, sanitize_run_name

    if args.corpus is not None:
        raise ConfigError("--resume continues a sweep on its own corpus: give no CORPUS")
    if given := ranges_given(args):
        raise ConfigError(f"--resume continues a sweep in its own space: give no {given[0]} (start a new sweep "
                          "for other ranges)")
    check_runs_dir(runs_dir)
    if args.resume:
        folder = Path(args.resume).expanduser()
        if not is_sweep_folder(folder):
            folder = runs_dir / sanitize_run_name(args.resume)
        if not is_sweep_folder(folder):
            raise ConfigError(f"{args.resume}: no such sweep in {runs_dir}")
    else:
        sweeps = [f for f in run_folders(runs_dir) if is_sweep_folder(f)]
        if not sweeps:
            raise ConfigError(f"no sweep to resume in {runs_dir}")
        folder = max(sweeps, key=lambda f: (f / SWEEP).stat().st_mtime)
    return folder


def handle_signals(sweep: Sweep, folder: Path) -> None:
    """Ctrl+C and SIGTERM stop the sweep (its trials save and end; `--resume` goes on); a lost
    terminal (SIGHUP) moves the output to tune.log in the sweep's folder and the sweep goes on."""

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping the trials (they save first)\n")
        sweep.interrupt.set()

    def hang_up(signum: int, frame: FrameType | None) -> None:
        from charrnn_tui.engine.runs import open_in_run

        try:
            fd = open_in_run(folder / "tune.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except OSError:
            fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, hang_up)


def rung_words(rungs: tuple[int, ...]) -> str:
    from charrnn_tui.engine.tune.sweep import tokens_label

    return ", ".join(tokens_label(r) for r in rungs)


def table(sweep: Sweep) -> str:
    """Every trial: its settings, the tokens it trained, its loss at its highest rung (the winner's
    after its finale), its state; best first among the trials at the highest rung."""
    from charrnn_tui.engine.tune.sweep import tokens_label

    state, h = sweep.state, sweep.state.decisions

    def order(trial: Trial) -> tuple[int, float, int]:
        rung = h.top_rung(trial.id)
        loss = h.reports[rung][trial.id] if rung is not None else None
        finite = loss if loss is not None and math.isfinite(loss) else math.inf
        return (-(rung if rung is not None else -1), finite, trial.id)

    rows = [("TRIAL", "MODEL", "DROPOUT", "LR", "SEQ", "TOKENS", "VAL", "STATE")]
    for trial in sorted(state.trials, key=order):
        s, rung = trial.settings, h.top_rung(trial.id)
        loss = h.reports[rung][trial.id] if rung is not None else None
        loss, steps = after_finale(state, trial.id, loss), state.result_steps(trial)
        rows.append((trial.name, f"{s.kind} {s.layers}x{s.hidden}", f"{s.dropout:.2f}", f"{s.lr:.2g}",
                     str(s.seq_len), tokens_label(steps * s.step_tokens) if steps else "-",
                     "-" if loss is None else "diverged" if not math.isfinite(loss) else f"{loss:.4f}",
                     sweep.state_of(trial)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def after_finale(state: SweepState, trial_id: int, loss: float | None) -> float | None:
    """A trial's loss at its highest rung, or its best after its finale where that is lower."""
    finale = state.finale_of(trial_id)
    if loss is None or finale is None or finale["loss"] is None:
        return loss
    return min(loss, finale["loss"])


def write_winner(sweep: Sweep, out: TextIO) -> None:
    from charrnn_tui.engine.tune.sweep import save, tokens_label, winner_checkpoint, winner_command

    state = sweep.state
    best = state.decisions.winner()
    if best is None:
        out.write("no trial reached its first rung: no winner\n")
        return
    trial_id, rung, loss = best
    trial = state.trials[trial_id]
    command = winner_command(state, trial, rung)
    finale = state.finale_of(trial_id)
    final_loss = after_finale(state, trial_id, loss)
    checkpoint = winner_checkpoint(sweep.folder, state, trial)
    state.winner = {"trial": trial.name, "run": checkpoint.parent.name, "rung": rung, "val_loss": final_loss,
                    "checkpoint": str(checkpoint), "command": command}
    save(sweep.folder, state)
    out.write(printable_line(f"winner: {trial.name}, {trial.settings.label()}: val {loss:.4f} at "
                             f"{tokens_label(state.plan.rungs[rung])} tokens (rung {rung + 1} of "
                             f"{len(state.plan.rungs)})") + "\n")
    if rung + 1 < len(state.plan.rungs) and state.plan.reach(rung + 1):  # the budget ended it below its top rung
        out.write(f"  (the budget ran out before rung {rung + 2}: the winner is the best of rung {rung + 1})\n")
    if finale and finale["run"] == trial.name:
        out.write(printable_line(f"  then trained on for the budget left ({duration(finale['seconds'])}) to "
                                 f"{tokens_label(trial.steps * trial.settings.step_tokens)} tokens: best val "
                                 f"{final_loss:.4f}") + "\n")
    elif finale:
        trained = f"{finale['loss']:.4f}" if finale["loss"] is not None else "no validation loss"
        tokens = tokens_label((finale["steps"] or 0) * trial.settings.step_tokens)
        out.write(printable_line(f"  then its settings trained afresh for the budget left "
                                 f"({duration(finale['seconds'])}) in {finale['run']}: {tokens} tokens, best val "
                                 f"{trained}") + "\n")
    out.write(printable_line(f"  checkpoint: {checkpoint}") + "\n")
    out.write(printable_line(f"  reproduce:  {command}") + "\n")


def resume_hint(folder: Path) -> str:
    from charrnn_tui.engine.runs import command_hint

    return command_hint(f"tune --resume {folder.name}", folder.parent)


DRIVER_START_WAIT = 60.0  # seconds for the driver to take the sweep's lock (imports on a loaded machine)


def start_sweep_driver(args: argparse.Namespace, out: TextIO = sys.stdout) -> Path:
    """`tune` without --headless: the sweep is made (or found) here, in the foreground, so that bad
    input is one line before any screen; then its loop runs as `tune --resume SWEEP --headless` in a
    session of its own, writing to SWEEP/tune.log, so that the sweep outlives the app and its
    terminal as a run's engine does, and the app is only its viewer (attach again with `tune
    --resume SWEEP`). A sweep whose loop already runs is only watched. Returns the sweep's folder."""
    import subprocess

    from charrnn_tui.engine.runs import default_runs_dir, is_live, open_in_run
    from charrnn_tui.engine.tune.sweep import save

    runs_dir = args.runs_dir or default_runs_dir()
    if args.resume is not None:
        folder = find_sweep(args, runs_dir)
        if is_live(folder):
            return folder  # its loop runs (another terminal's, or one the app started): watched
        resumed_sweep(args, runs_dir)  # the checks (a budget left), before anything starts
    else:
        folder, state = new_sweep(args, runs_dir, out)
        save(folder, state)
    argv = [sys.executable, "-m", "charrnn_tui.engine", "tune", "--resume", str(folder), "--headless",
            "--runs-dir", str(runs_dir)]
    if args.resume is not None and args.budget is not None:
        argv += ["--budget", f"{args.budget}s"]
    if args.continue_on:
        argv.append("--continue")
    log = open_in_run(folder / "tune.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        driver = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    finally:
        os.close(log)
    deadline = time.monotonic() + DRIVER_START_WAIT
    while not is_live(folder) and time.monotonic() < deadline:  # the app then shows a sweep that runs
        if driver.poll() is not None:
            raise ConfigError(f"the sweep's loop ended at once: {last_line(folder / 'tune.log')}")
        time.sleep(0.1)
    return folder


def last_line(path: Path) -> str:
    """The last line of a log, for an error message (the log may be anything: read bounded)."""
    from charrnn_tui.engine.runs import read_run_file

    data, problem = read_run_file(path, 2**20)
    lines = (data or b"").decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else problem or f"nothing in {path}"
