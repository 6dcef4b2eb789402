"""Learning-rate rules for open-ended runs, compared at equal steps: how the rule in
engine/run/schedule.py was chosen.

    python bench/schedule_candidates.py timemachine plateau --steps 12000
    python bench/schedule_candidates.py jokes cosine-then-plateau --steps 3000 -- --tokens word

Trains the app's default run for CORPUS (its preset, fitted to the corpus, validated every 500
steps or once an epoch where that is sooner) on one thread, with the learning rate taken from the
named candidate instead of the engine's schedule, and stops it after --steps steps. Prints the
validation loss at each evaluation and the best, by step: steps, unlike minutes, do not depend on
the machine's load, so two candidates can train side by side. Candidates:

  cosine10              the old open-ended rule: a cosine to min_lr_ratio (0 for small) over 10 epochs, then held
  plateau               the peak from the start, divided by 4 at each evaluation without a new best, to peak/1024
  plateau-p2-half       the same, halved after two evaluations without a new best
  restarts              cosine cycles of 10, 20, 40... epochs from the peak, halved each cycle, each cycle only
                        if the one before brought a new best (else the floor)
  cosine-then-plateau   the engine's rule: cosine10 (to peak/1024), then back to the peak and the plateau rule,
                        judged against the best since then (--restart 0.5 or 0.25: back to half or a quarter)
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from charrnn_tui.engine.cli import arguments
from charrnn_tui.engine.cli import main as cli
from charrnn_tui.engine.events import Evaluated, Progress
from charrnn_tui.engine.protocol import Stop
from charrnn_tui.engine.run import schedule
from charrnn_tui.engine.run.run import learning_rate
from charrnn_tui.engine.run.trainer import Trainer

FLOOR = schedule.FLOOR


class Candidate:
    def __init__(self, restart: float = 1.0):
        self.scale, self.bad, self.best, self.restart = 1.0, 0, math.inf, restart
        self.cycle, self.cycle_start, self.cycle_best, self.holding = 0, 0.0, False, False
        self.switched = False

    def rate(self, name: str, lr: float, min_ratio: float, epoch: float) -> float:
        if name == "cosine10":
            return schedule.cosine(lr, lr * min_ratio, min(1.0, epoch / 10))
        if name.startswith("plateau"):
            return lr * max(self.scale, FLOOR)
        if name == "cosine-then-plateau":
            if not self.switched and epoch < 10:
                return schedule.cosine(lr, lr * FLOOR, epoch / 10)
            if not self.switched:
                self.switched, self.scale, self.best = True, self.restart, math.inf
            return lr * max(self.scale, FLOOR)
        if name == "restarts":
            if self.holding:
                return lr * FLOOR
            fraction = (epoch - self.cycle_start) / (10.0 * 2**self.cycle)
            if fraction >= 1:
                if not self.cycle_best:
                    self.holding = True
                    return lr * FLOOR
                self.cycle, self.cycle_start, self.cycle_best = self.cycle + 1, epoch, False
                fraction = 0.0
            return schedule.cosine(lr * 0.5**self.cycle, lr * FLOOR, fraction)
        raise SystemExit(f"unknown candidate {name!r}")

    def evaluated(self, name: str, value: float) -> None:
        improved = value < self.best
        self.best = min(self.best, value)
        self.cycle_best = self.cycle_best or improved
        if name == "cosine-then-plateau" and not self.switched:
            self.best = math.inf  # judged against the best since the return to the peak
            return
        if name.startswith("plateau") or name == "cosine-then-plateau":
            self.bad = 0 if improved else self.bad + 1
            patience, factor = (2, 0.5) if name == "plateau-p2-half" else (1, 0.25)
            if self.bad >= patience:
                self.scale, self.bad = self.scale * factor, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus")
    parser.add_argument("candidate")
    parser.add_argument("--steps", type=int, default=12_000)
    parser.add_argument("--restart", type=float, default=1.0, help="cosine-then-plateau: the rate it goes back to")
    parser.add_argument("train_flags", nargs="*", help="after --: more train flags (--tokens word)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="schedule-") as runs:
        train = cli.parse(["train", args.corpus, *args.train_flags, "--threads", "1", "--sample-interval", "0",
                           "--checkpoint-interval", "0", "--runs-dir", runs, "--headless"])
        config = arguments.config_from_args(train)
        candidate = Candidate(args.restart)

        class Trial(Trainer):
            def _lr(self) -> float:
                if self.trained.step < self.config.warmup_steps:
                    return self.config.lr * (self.trained.step + 1) / self.config.warmup_steps
                return candidate.rate(args.candidate, self.config.lr, self.config.min_lr_ratio,
                                      self.batcher.epoch_float)

        points: list[tuple[int, float, float]] = []

        def on_event(event) -> None:
            if isinstance(event, Evaluated):
                candidate.evaluated(args.candidate, event.nats)
                points.append((event.step, event.nats, learning_rate(trainer.built, trainer.trained)))
                print(f"step {event.step}: validation {event.nats:.4f}, lr now {points[-1][2]:.2e}", flush=True)
            elif isinstance(event, Progress) and event.step >= args.steps:
                trainer.request(Stop(save=False))

        trainer = Trial(config, on_event=on_event, runs_dir=Path(runs))
        trainer.run()
    step, best, _ = min(points, key=lambda p: p[1])
    print(f"{args.corpus} {args.candidate}: best validation {best:.4f} at step {step} of {args.steps}")


if __name__ == "__main__":
    main()
