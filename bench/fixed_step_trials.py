"""Training settings compared at a fixed number of steps, so that a busy machine cannot bias them.

    python bench/fixed_step_trials.py [--steps 4900] [--preset small] TRIAL [TRIAL ...]

Each trial is the preset with one change (`none` for the preset as it is), trained for --steps
steps on tiny-shakespeare with one thread and the seed of the config, then validated over the
whole validation split; one JSON line per trial. Per-step cost is not measured: a change that
makes steps slower (a longer sequence, a wider model) must be confirmed with
bench/time_to_loss.py, which gives every setting the same seconds.

Trials: KEY=VALUE sets a config field (model.KEY for the model), several joined with `,`
(`weight_decay=0.1,min_lr_ratio=0`); `forget-bias-1` starts the LSTM's forget gates at 1;
`betas-0.95` gives AdamW betas (0.9, 0.95).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine import events as ev
from charrnn_tui.engine.run import run_setup
from charrnn_tui.engine.run.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from train_speed import parse_value  # noqa: E402  (the --set syntax of bench/train_speed.py)


def configured(base: cfg.TrainConfig, trial: str) -> tuple[cfg.TrainConfig, str | None]:
    """The config for `trial`, and the optimizer/model patch it names, if any."""
    if trial in ("none", "forget-bias-1", "betas-0.95"):
        return base, None if trial == "none" else trial
    top, model = {}, {}
    for pair in trial.split(","):
        key, _, value = pair.partition("=")
        (model if key.startswith("model.") else top)[key.removeprefix("model.")] = parse_value(value)
    config = dataclasses.replace(base, **top)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **model)), None


def patched_optimizer(patch: str | None):
    real = run_setup.make_optimizer

    def make_optimizer(model, config, device):
        if patch == "forget-bias-1":  # PyTorch's gate order is input, forget, cell, output
            with torch.no_grad():
                h = model.rnn.hidden_size
                for name, p in model.rnn.named_parameters():
                    if name.startswith("bias_ih"):
                        p[h:2 * h].fill_(1.0)
                    elif name.startswith("bias_hh"):
                        p[h:2 * h].fill_(0.0)
        optimizer = real(model, config, device)
        if patch == "betas-0.95":
            for group in optimizer.param_groups:
                group["betas"] = (0.9, 0.95)
        return optimizer

    return make_optimizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trials", nargs="+")
    parser.add_argument("--steps", type=int, default=4900, help="what 75 s buys the small preset on 2 cores")
    parser.add_argument("--preset", default="small")
    args = parser.parse_args()
    base = cfg.apply_preset(cfg.TrainConfig(corpus="shakespeare"), args.preset)
    base = dataclasses.replace(base, max_steps=args.steps, eval_interval=10**9, sample_interval=0,
                               checkpoint_interval=0, threads=1, device="cpu")
    real = run_setup.make_optimizer
    for trial in args.trials:
        config, patch = configured(base, trial)
        run_setup.make_optimizer = patched_optimizer(patch)
        result = {}

        def on_event(event: ev.Event, result: dict = result) -> None:
            if isinstance(event, ev.Evaluated):
                result["val"] = event.nats

        started = time.time()
        with tempfile.TemporaryDirectory() as runs:
            Trainer(config, on_event=on_event, runs_dir=Path(runs)).run()
        run_setup.make_optimizer = real
        print(json.dumps({"trial": trial, "steps": args.steps, "val_nats": round(result["val"], 4),
                          "wall_s": round(time.time() - started)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
