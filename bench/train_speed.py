"""Train presets on tiny-shakespeare for a fixed time on this device; print chars/s and validation loss.

    python bench/train_speed.py                       # tiny and small, 60 s each
    python bench/train_speed.py --seconds 75 --presets small --set model.hidden=512 --set lr=0.005

The validation loss is measured on the whole held-out split (the last 10%), after training; the
seconds are training time only (evaluation excluded). Throughput drifts on shared machines:
compare candidates back to back, and repeat them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine import events as ev
from charrnn_tui.engine.run.trainer import Trainer


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def build_config(preset: str, seconds: float, device: str, threads: int | None, sets: list[str]) -> cfg.TrainConfig:
    config = cfg.apply_preset(cfg.TrainConfig(corpus="shakespeare"), preset)
    config = dataclasses.replace(
        config, max_time=seconds, device=device, threads=threads, sample_interval=0, checkpoint_interval=0,
        eval_interval=10**9,  # one evaluation, at the end, on the whole validation split
    )
    model_changes, changes = {}, {}
    for item in sets:
        key, _, value = item.partition("=")
        target = model_changes if key.startswith("model.") else changes
        target[key.removeprefix("model.")] = parse_value(value)
    config = dataclasses.replace(config, **changes, model=dataclasses.replace(config.model, **model_changes))
    cfg.validate(config)
    return config


def run_one(config: cfg.TrainConfig) -> dict:
    result: dict = {}

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Started):
            result.update(parameters=event.info.parameters, device=event.info.device_name)
        elif isinstance(event, ev.Evaluated):
            result.update(val_nats=event.nats, val_bits=event.bits, eval_seconds=event.seconds)

    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        trainer = Trainer(config, on_event=on_event, runs_dir=Path(runs))
        trainer.run()
        trained = trainer.trained
        result.update(
            steps=trained.step, train_seconds=trained.train_seconds, wall_seconds=time.perf_counter() - t0,
            chars_per_s=trained.tokens_seen / trained.train_seconds, epochs=trainer.built.batcher.epoch_float,
        )
    m = config.model
    result["model"] = f"{m.kind} {m.layers}x{m.hidden} e{m.embedding}"
    result["batch"] = f"{config.batch_size}x{config.seq_len}"
    result["lr"] = config.lr
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=list(cfg.PRESETS))
    parser.add_argument("--seconds", type=float, default=60.0, help="training time per preset (default: 60)")
    parser.add_argument("--device", default="auto", choices=cfg.DEVICES)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. lr=0.005 or model.hidden=512 (repeatable)")
    parser.add_argument("--json", action="store_true", help="one JSON object per preset instead of a table")
    args = parser.parse_args(argv)

    rows = []
    for preset in args.presets:
        config = build_config(preset, args.seconds, args.device, args.threads, args.set)
        row = {"preset": preset, **run_one(config)}
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print(f"device: {rows[0]['device']}; {args.seconds:g} s of training per preset; tiny-shakespeare, "
              "validation = whole last 10%")
        print(f"{'preset':<7} {'model':<18} {'params':>8} {'batch':>7} {'lr':>7} {'steps':>6} {'epochs':>6} "
              f"{'chars/s':>9} {'val nats':>9} {'val bpc':>8}")
        for r in rows:
            print(f"{r['preset']:<7} {r['model']:<18} {r['parameters']:>8,} {r['batch']:>7} {r['lr']:>7.4f} "
                  f"{r['steps']:>6} {r['epochs']:>6.2f} {r['chars_per_s']:>9,.0f} {r['val_nats']:>9.4f} "
                  f"{r['val_bits']:>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
