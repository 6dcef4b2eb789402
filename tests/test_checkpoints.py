import os
import pickle
import zipfile

import pytest
import torch
from helpers import step_losses, tiny_config

from charrnn_tui.engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from charrnn_tui.engine.errors import CheckpointError
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import BEST, LATEST, sanitize_run_name


@pytest.mark.parametrize("sampler", ["sequential", "random"])
def test_resume_continues_exactly_where_training_stopped(sampler, repetitive_text, runs_dir):
    # dropout > 0 so that the RNG state has to be restored too; reports every step
    config = tiny_config(repetitive_text, max_steps=60, sampler=sampler, dropout=0.2, layers=2,
                         report_interval=1e-9, eval_interval=10, sample_interval=0.001)
    full = step_losses(config=config, runs_dir=runs_dir, run_name="full")
    part = step_losses(stop_at=25, config=config, runs_dir=runs_dir, run_name="part")
    assert max(part) == 25
    resumed = step_losses(resume=runs_dir / "part" / LATEST, runs_dir=runs_dir)
    assert sorted(resumed) == list(range(26, 61))
    assert [resumed[s] for s in range(26, 61)] == [full[s] for s in range(26, 61)]


def test_checkpoint_holds_everything_needed(repetitive_text, runs_dir):
    Trainer(tiny_config(repetitive_text, max_steps=60, eval_interval=30), runs_dir=runs_dir, run_name="r").run()
    ck = load_checkpoint(runs_dir / "r" / LATEST)
    for key in ("model", "optimizer", "vocab", "config", "step", "batcher", "train_state", "rng", "history",
                "best_val"):
        assert key in ck
    assert ck["step"] == 60 and ck["history"]["losses"]["steps"] == 60 and len(ck["history"]["val"]) == 2
    assert (runs_dir / "r" / BEST).is_file()
    assert os.stat(runs_dir / "r").st_mode & 0o077 == 0  # user-only run folder
    assert not [p for p in (runs_dir / "r").iterdir() if ".tmp" in p.name]


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint({"step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="no space left on device; the previous one is intact"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": 1, "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_plain_pickle_truncated_and_foreign_files_are_refused(tmp_path):
    pickled = tmp_path / "p.pt"
    pickled.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(pickled)
    good = tmp_path / "good.pt"
    save_checkpoint({"step": 1, "w": torch.ones(1000)}, good)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a charrnn-tui checkpoint"):
        load_checkpoint(foreign)
    old = tmp_path / "old.pt"
    torch.save({"format": FORMAT, "format_version": 99}, old)
    with pytest.raises(CheckpointError, match="format version 99; this charrnn-tui reads version 1"):
        load_checkpoint(old)
    assert zipfile.is_zipfile(good)


def test_run_names_cannot_escape_the_runs_folder():
    assert sanitize_run_name("../../etc/passwd") == "etc-passwd"
    assert sanitize_run_name("..") == "run"
    assert "/" not in sanitize_run_name("a/b\\c")


def test_checkpoint_files_are_user_only(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint({"step": 1}, path)
    assert os.stat(path).st_mode & 0o077 == 0


def test_two_trainers_cannot_share_a_run_folder(repetitive_text, runs_dir):
    from charrnn_tui.engine.runs import RunLock

    Trainer(tiny_config(repetitive_text, max_steps=5), runs_dir=runs_dir, run_name="busy").run()
    held = RunLock(runs_dir / "busy").acquire()  # as if another process were training it
    try:
        with pytest.raises(CheckpointError, match="run busy is in use by process"):
            Trainer(resume=runs_dir / "busy" / LATEST, runs_dir=runs_dir).run()
    finally:
        held.release()
    assert Trainer(resume=runs_dir / "busy" / LATEST, runs_dir=runs_dir, overrides={"max_steps": 8}).run() == "finished"


def test_the_last_k_checkpoints_are_kept(repetitive_text, runs_dir):
    config = tiny_config(repetitive_text, max_steps=50, checkpoint_interval=10, keep_checkpoints=2)
    Trainer(config, runs_dir=runs_dir, run_name="k").run()
    kept = sorted(p.name for p in (runs_dir / "k").glob("step-*.pt"))
    assert kept == ["step-0000040.pt", "step-0000050.pt"]
    assert load_checkpoint(runs_dir / "k" / "step-0000040.pt")["step"] == 40
    assert load_checkpoint(runs_dir / "k" / LATEST)["step"] == 50


def test_a_config_from_an_older_checkpoint_with_the_retired_compile_field_still_loads():
    from charrnn_tui.engine import config as cfg

    data = cfg.to_dict(cfg.TrainConfig())
    config = cfg.from_dict({**data, "compile": False})
    assert config == cfg.TrainConfig() and "compile" not in cfg.to_dict(config)
    with pytest.raises(CheckpointError, match="unknown field 'compiled'"):
        cfg.from_dict({**data, "compiled": False})


def test_each_save_reseeds_cudnns_dropout_from_the_saved_generator(repetitive_text, runs_dir, monkeypatch):
    """cuDNN's dropout state cannot be saved; the trainer re-seeds it after every save (a no-op
    off CUDA). On a GPU, tests/test_cuda.py checks that this makes resume exact."""
    from charrnn_tui.engine.run import saving

    reseeded = []
    monkeypatch.setattr(saving, "reseed_cudnn_dropout", lambda device: reseeded.append(trainer.trained.step))
    trainer = Trainer(tiny_config(repetitive_text, max_steps=60, checkpoint_interval=20, eval_interval=1000),
                      runs_dir=runs_dir, run_name="r")
    trainer.run()
    saved = sorted(int(p.stem.split("-")[1]) for p in (runs_dir / "r").glob("step-*.pt"))
    assert saved == [20, 40, 60]
    assert reseeded == [20, 40, 60, 60, 60]  # latest at 20, 40, 60; best.pt and latest.pt after the final evaluation


def test_reseeding_cudnn_dropout_leaves_the_cpu_generator_alone():
    from charrnn_tui.engine.model.device import reseed_cudnn_dropout

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    reseed_cudnn_dropout(torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("message, expected", [
    ("", "ValueError"),
    ("first line\nsecond line", "first line"),
    ("It broke. Then more happened.", "It broke"),
    ("ends with a dot.", "ends with a dot"),
    ("  padded  ", "padded"),
    ("word " * 40, ("word " * 40)[:117].rsplit(" ", 1)[0] + "..."),
    ("x" * 120, "x" * 120),
    ("x" * 121, "x" * 117 + "..."),
    ("x" * 110 + " yyyyyy zzzzzzzzzz", "x" * 110 + "..."),  # cut at 117 characters, then at a space
])
def test_first_line_keeps_errors_to_one_short_line(message, expected):
    from charrnn_tui.engine.checkpoint import first_line

    assert first_line(ValueError(message)) == expected


def test_the_first_non_finite_tensor_is_named_by_its_path_in_the_checkpoint():
    from charrnn_tui.engine.checkpoint import non_finite_tensor

    payload = {"model": {"rnn.weight": torch.ones(3), "head.bias": torch.tensor([1.0, float("inf")])},
               "train_state": [torch.zeros(2), torch.tensor([float("nan")])], "step": 4,
               "ids": torch.tensor([1, 2])}
    assert non_finite_tensor(payload) == "model.head.bias"
    payload["model"]["head.bias"] = torch.ones(2)
    assert non_finite_tensor(payload) == "train_state[1]"
    payload["train_state"][1] = torch.zeros(1)
    assert non_finite_tensor(payload) is None
    assert non_finite_tensor(torch.tensor([float("nan")])) == "tensor"


def test_a_checkpoint_records_its_corpus_and_when_it_was_saved_and_says_so(repetitive_text, runs_dir):
    import time

    from charrnn_tui.engine.events import CheckpointSaved

    events = []
    before = time.time()
    Trainer(tiny_config(repetitive_text, max_steps=20), runs_dir=runs_dir, run_name="c", on_event=events.append).run()
    ck = load_checkpoint(runs_dir / "c" / LATEST)
    assert ck["corpus"] == {"name": repetitive_text.stem, "source": str(repetitive_text)}
    assert before <= ck["saved_at"] <= time.time()
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert {(e.path, e.kind, e.step) for e in saved} == {(str(runs_dir / "c" / LATEST), "latest", 20),
                                                         (str(runs_dir / "c" / BEST), "best", 20)}
    assert all(before <= e.saved_at <= time.time() for e in saved)


def test_a_checkpoint_that_cannot_even_be_opened_is_one_clear_error(tmp_path):
    from charrnn_tui.engine.checkpoint import save_checkpoint
    from charrnn_tui.engine.errors import CheckpointError

    missing = tmp_path / "gone" / "latest.pt"  # no temporary file was ever made: nothing to clean up
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*latest.pt: No such file or directory; "
                                              r"the previous one is intact"):
        save_checkpoint({"step": 1}, missing)
    assert not (tmp_path / "gone").exists()


def test_a_failed_save_is_a_warning_and_training_goes_on(repetitive_text, runs_dir, monkeypatch):
    from charrnn_tui.engine.errors import CheckpointError
    from charrnn_tui.engine.events import Notice
    from charrnn_tui.engine.run import saving

    def no_space(payload, path):
        raise CheckpointError(f"cannot write checkpoint {path}: no space left on device; the previous one is intact")

    monkeypatch.setattr(saving, "save_checkpoint", no_space)
    events = []
    trainer = Trainer(tiny_config(repetitive_text, max_steps=30, checkpoint_interval=10), runs_dir=runs_dir,
                      on_event=events.append)
    trainer.run()
    warnings = [e for e in events if isinstance(e, Notice) and "no space left" in e.message]
    assert warnings and all(e.level == "warning" for e in warnings)
    assert trainer.trained.step == 30  # headless, the run trains on (the previous checkpoint is intact)
