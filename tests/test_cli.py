"""The real console script, in a subprocess, as a user runs it."""

import dataclasses
import json

import pytest
from helpers import run_cli as charrnn

TINY = ["--preset", "tiny", "--hidden", "32", "--embedding", "16", "--seq-len", "16", "--batch-size", "4",
        "--device", "cpu", "--threads", "1", "--sample-interval", "0"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    corpus = folder / "fox.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    jsonl = folder / "events.jsonl"
    result = charrnn("train", str(corpus), *TINY, "--max-steps", "120", "--eval-interval", "60",
                     "--runs-dir", str(folder / "runs"), "--name", "fox", "--headless", "--jsonl", str(jsonl))
    assert result.returncode == 0, result.stderr
    return folder, result, jsonl


def test_train_headless_prints_progress_and_writes_checkpoints(trained_run):
    folder, result, jsonl = trained_run
    out = result.stdout
    assert "run fox in" in out and "train 2,430 / validation 270 tokens (last 10%)" in out
    assert "step 120: validation" in out and "bits" in out and "perplexity" in out
    assert "finished: reached max-steps 120" in out
    assert (folder / "runs" / "fox" / "latest.pt").is_file() and (folder / "runs" / "fox" / "best.pt").is_file()
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {"Started", "Progress", "Evaluated", "CheckpointSaved", "StateChanged"} <= kinds
    assert events[-1] == {**events[-1], "event": "StateChanged", "state": "finished"}


def test_sample_from_checkpoint_is_seeded_and_starts_with_the_prime(trained_run):
    folder, _, _ = trained_run
    args = ["sample", "fox", "--runs-dir", str(folder / "runs"), "--prime", "the quick", "-n", "60", "--seed", "3"]
    a, b = charrnn(*args), charrnn(*args)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("the quick") and len(a.stdout) == len("the quick") + 61


def test_sample_reports_unknown_prompt_characters(trained_run):
    folder, _, _ = trained_run
    result = charrnn("sample", str(folder / "runs" / "fox"), "--prime", "thé☃", "-n", "5", "--seed", "1")
    assert result.returncode == 0
    assert "prompt: 'é' -> 'e'" in result.stderr and "dropped" in result.stderr


def test_eval_reports_nats_bits_and_perplexity(trained_run, tmp_path):
    folder, _, _ = trained_run
    text = tmp_path / "held-out.txt"
    text.write_text("the lazy dog jumps over the quick brown fox. " * 5)
    result = charrnn("eval", str(folder / "runs" / "fox" / "latest.pt"), str(text))
    assert result.returncode == 0, result.stderr
    assert "nats/char" in result.stdout and "bits/char" in result.stdout and "perplexity" in result.stdout


def test_resume_continues_from_the_saved_step(trained_run):
    folder, _, _ = trained_run
    result = charrnn("train", "--resume", "fox", "--runs-dir", str(folder / "runs"), "--max-steps", "30",
                     "--headless")
    assert result.returncode == 0, result.stderr
    assert "resumed at step 120: 30 steps more, to max-steps 150" in result.stdout
    assert "finished: reached max-steps 150" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "/no/such/file.txt", "--headless"], "no such file or folder"),
        (["sample", "/no/such.pt"], "no such checkpoint"),
        (["sample", "fox", "--temperature", "0"], "argument --temperature: must be a positive number, not 0"),
        (["train", "jokes", "--csv-column", "Nope", "--headless"], "no column 'Nope'"),
    ],
)
def test_errors_are_one_line_without_traceback(args, message, trained_run):
    folder, _, _ = trained_run
    result = charrnn(*args, "--runs-dir", str(folder / "runs"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["eval"]])
def test_help_everywhere(command):
    result = charrnn(*command, "--help")
    assert result.returncode == 0 and "usage: charrnn-tui" in result.stdout
    if command == ["train"]:
        assert "presets (the defaults" in result.stdout and "(default: 0.1)" in result.stdout


@pytest.mark.parametrize("batch_size", ["2", "8"])
def test_eval_of_a_run_prints_the_validation_figure_training_printed(batch_size, tmp_path):
    """One evaluation everywhere: `eval RUN` (the run's own validation text) gives what training
    measured for the same weights, whatever the training batch size."""
    corpus = tmp_path / "story.txt"
    corpus.write_text("".join(f"line {i}: the {'quick' if i % 3 else 'slow'} fox, {i * 7 % 11} times.\n"
                              for i in range(300)))
    runs, jsonl = tmp_path / "runs", tmp_path / "events.jsonl"
    trained = charrnn("train", str(corpus), *TINY, "--batch-size", batch_size, "--max-steps", "80",
                      "--eval-interval", "30", "--runs-dir", str(runs), "--name", "r", "--headless",
                      "--jsonl", str(jsonl))
    assert trained.returncode == 0, trained.stderr
    evaluated = [e for e in map(json.loads, jsonl.read_text().splitlines()) if e["event"] == "Evaluated"]
    assert [e["step"] for e in evaluated] == [30, 60, 80]
    latest = charrnn("eval", "r", "--runs-dir", str(runs))
    assert latest.returncode == 0, latest.stderr
    assert "validation split (the last 10%)" in latest.stdout
    assert f"{evaluated[-1]['nats']:.4f} nats/char" in latest.stdout
    best = min(evaluated, key=lambda e: e["nats"])
    from_best = charrnn("eval", str(runs / "r" / "best.pt"))
    assert f"{best['nats']:.4f} nats/char" in from_best.stdout


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "shakespeare"], (384, 0.0)),  # the corpus the presets were chosen on: as it is
    (["train", "timemachine"], (256, 0.25)),  # 179 kB: narrower, and dropout (measured)
    (["train", "jokes"], (224, 0.25)),
    (["train", "timemachine", "--preset", "small"], (384, 0.0)),  # a preset asked for by name is kept
    (["train", "timemachine", "--hidden", "200"], (200, 0.25)),  # and a flag always wins
    (["train", "timemachine", "--dropout", "0.1"], (256, 0.1)),
    (["train", "timemachine", "--tokens", "word"], (256, 0.25)),  # word models too (measured on the jokes)
    (["train", "shakespeare", "--tokens", "word"], (384, 0.0)),
    (["train", "timemachine", "--layers", "3"], (96, 0.25)),  # three layers in the same budget: narrower
])
def test_the_default_preset_is_sized_for_the_corpus(argv, expected):
    from charrnn_tui.engine.cli.arguments import config_from_args
    from charrnn_tui.engine.cli.main import build_parser

    args = build_parser().parse_args([*argv, "--device", "cpu"])
    config = config_from_args(args)
    assert (config.model.hidden, config.model.dropout) == expected


def test_a_small_corpus_of_files_is_measured_by_its_text(tmp_path):
    from charrnn_tui.engine import config as cfg
    from charrnn_tui.engine.cli.arguments import load_train_corpus
    from charrnn_tui.engine.cli.main import build_parser
    from charrnn_tui.engine.errors import CorpusError

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("x" * 1000)
    (folder / "b.txt").write_text("y" * 500)
    (folder / "ignored.bin").write_bytes(b"z" * 10_000)
    # what the fit counts: the characters of the .txt files (and the newline that joins them), not the .bin
    assert len(load_train_corpus(build_parser().parse_args(["train", str(folder)])).text) == 1501
    assert len(load_train_corpus(build_parser().parse_args(["train", str(folder / "a.txt")])).text) == 1000
    with pytest.raises(CorpusError):
        load_train_corpus(build_parser().parse_args(["train", str(tmp_path / "missing.txt")]))
    small = cfg.apply_preset(cfg.TrainConfig(), "small")
    assert cfg.fit_to_corpus(small, None) == small
    assert cfg.fit_to_corpus(small, cfg.REFERENCE_CHARS // 2) == small
    tiny_text = cfg.fit_to_corpus(small, 1500)
    assert tiny_text.model.hidden == 64 and tiny_text.model.dropout == 0.25  # never below 64 units
    fitted = cfg.fit_to_corpus(small, 178_887)
    assert fitted.model.hidden == 256  # 384 x (178,887 / 1,115,394) ** 0.25 = 243, to the nearest 32
    three = dataclasses.replace(small, model=dataclasses.replace(small.model, layers=3))
    narrow = cfg.fit_to_corpus(three, 178_887, preset_model=small.model).model
    budget = cfg.recurrent_parameters(small.model, 256)
    weights = cfg.recurrent_parameters
    assert weights(narrow, narrow.hidden) <= budget < weights(narrow, narrow.hidden + 32)


def test_the_train_flags_that_set_a_config_field_follow_from_the_config():
    """No table to keep: a value flag named as a field of TrainConfig or ModelConfig sets it."""
    from charrnn_tui.engine import config as cfg
    from charrnn_tui.engine.cli.arguments import Parser, add_train_arguments, train_flags

    flag_fields = train_flags()  # built once, when first needed: not at import
    assert flag_fields["model"] == ("kind", True) and flag_fields["hidden"] == ("hidden", True)
    assert flag_fields["max_time"] == ("max_time", False) and "one_hot" not in flag_fields
    parser = Parser(add_help=False)
    add_train_arguments(parser)
    flags = {a.dest for a in parser._actions if a.option_strings}
    fields = {f.name for f in dataclasses.fields(cfg.TrainConfig)}
    fields |= {f.name for f in dataclasses.fields(cfg.ModelConfig)}
    # every flag named as a field sets it, but those whose default is not "not given" (read by name)
    assert flags & fields - set(flag_fields) == {"preset", "ascii", "tensorboard"}
