"""Bad input through the real console script: one clear line on stderr, exit 2, no traceback,
nothing written. And unusual but valid text that must train."""

from __future__ import annotations

import codecs
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from charrnn_tui.engine.checkpoint import FORMAT, save_checkpoint

TRAIN = ["train", "--headless", "--device", "cpu", "--max-steps", "3", "--sample-interval", "0"]


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CORPUS_CASES = {
    "missing": (lambda d: d / "nope.txt", ["no such file or folder"]),
    "folder without text": (lambda d: (d / "empty-dir").mkdir() or d / "empty-dir", ["holds no .txt files"]),
    "empty": (lambda d: write(d / "e.txt", b""), ["file is empty"]),
    "whitespace only": (lambda d: write(d / "w.txt", b" \n\n \t\n"), ["no text to train on"]),
    "binary": (lambda d: write(d / "b.bin", bytes(range(256)) * 4), ["binary data (NUL byte at offset 0)"]),
    "nul bytes in text": (lambda d: write(d / "n.txt", b"hello\x00world"), ["NUL byte at offset 5"]),
    "latin-1": (lambda d: write(d / "l.txt", "naïve café".encode("latin-1")),
                ["not valid utf-8 at byte offset 2", "--encoding"]),
    "shorter than a sequence": (lambda d: write(d / "s.txt", b"just a few words of text here\n" * 2),
                                ["lower --batch-size or --seq-len"]),
}


@pytest.mark.parametrize("case", CORPUS_CASES)
def test_bad_corpus(case, tmp_path):
    make, fragments = CORPUS_CASES[case]
    corpus = make(tmp_path)
    runs = tmp_path / "runs"
    result = run_cli(*TRAIN, str(corpus), "--runs-dir", str(runs))
    assert_one_line_error(result, *fragments)
    assert not runs.exists() or not any(runs.iterdir())  # nothing written


@pytest.mark.parametrize(
    "content, args, fragment",
    [
        ('id,text\n1,"hello"\n', ["--csv-column", "Joke"], "no column 'Joke' (columns: id, text)"),
        ('id,Joke\n1,"unterminated\n2,ok\n', ["--csv-column", "Joke"], "broken CSV at line"),
        ('id,Joke\n1,"a"b\n', ["--csv-column", "Joke"], "broken CSV at line 2"),
    ],
)
def test_bad_csv(content, args, fragment, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(content)
    assert_one_line_error(run_cli(*TRAIN, str(path), *args, "--runs-dir", str(tmp_path / "runs")), fragment)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    corpus = folder / "c.txt"
    corpus.write_text("abcdefgh " * 300)
    result = run_cli(*TRAIN, str(corpus), "--preset", "tiny", "--hidden", "16", "--runs-dir", str(folder / "runs"),
                     "--name", "good")
    assert result.returncode == 0, result.stderr
    return folder / "runs" / "good" / "latest.pt"


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def bad_checkpoints(tmp: Path, good: Path) -> dict[str, tuple[Path, str]]:
    text = write(tmp / "text.pt", b"not a checkpoint\n")
    truncated = write(tmp / "truncated.pt", good.read_bytes()[: len(good.read_bytes()) // 2])
    foreign = tmp / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)
    future = tmp / "future.pt"
    torch.save({"format": FORMAT, "format_version": 7}, future)
    evil = tmp / "evil.pt"
    torch.save({"format": FORMAT, "format_version": 1, "x": _Exploit()}, evil)
    bad_config = tmp / "bad-config.pt"
    save_checkpoint({"config": {"model": {"kind": "transformer"}}, "vocab": {"kind": "char", "tokens": ["a"]}},
                    bad_config)
    return {
        "text": (text, "not a readable checkpoint"),
        "truncated": (truncated, "truncated or corrupt"),
        "foreign": (foreign, "not a charrnn-tui checkpoint"),
        "future version": (future, "format version 7; this charrnn-tui reads version 1"),
        "code on unpickling": (evil, "refused, loading it would import posix.system"),
        "invalid config": (bad_config, "checkpoint config is invalid"),
    }


@pytest.mark.parametrize("case", ["text", "truncated", "foreign", "future version", "code on unpickling",
                                  "invalid config"])
def test_bad_checkpoint(case, checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, fragment = bad_checkpoints(tmp_path, checkpoint)[case]
    before = path.read_bytes()
    for args in (["sample", str(path)], ["eval", str(path), str(checkpoint.parent.parent.parent / "c.txt")],
                 ["train", "--headless", "--resume", str(path)]):
        result = run_cli(*args)
        assert_one_line_error(result, fragment)
        assert "weights_only" not in result.stderr  # never the advice torch gives: to load it unsafely
    assert path.read_bytes() == before  # nothing changed
    assert not (tmp_path / "pwned-by-checkpoint").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--temperature", "0"], "argument --temperature: must be a positive number, not 0"),
        (["--temperature", "-1"], "argument --temperature: must be a positive number, not -1"),
        (["--temperature", "nan"], "argument --temperature: must be a positive number, not nan"),
        (["--temperature", "warm"], "argument --temperature: not a number: 'warm'"),
        (["--temperature", "11"], "argument --temperature: must be from 0.05 to 10, not 11"),
        (["--top-k", "1000"], "top-k must be between 1 and the vocabulary size"),
        (["-n", "-5"], "length must be 0 or more"),
        (["--top-p", "2"], "top-p must be in (0, 1]"),
    ],
)
def test_bad_sampling_options(args, fragment, checkpoint):
    assert_one_line_error(run_cli("sample", str(checkpoint), *args), fragment)


def test_prompt_outside_the_vocabulary_is_folded_not_fatal(checkpoint):
    result = run_cli("sample", str(checkpoint), "--prime", "ábc😀", "-n", "10", "--seed", "1")
    assert result.returncode == 0 and result.stdout.startswith("ábc😀")
    assert "'á' -> 'a'" in result.stderr and "dropped" in result.stderr


VALID_TEXTS = {
    "crlf": (lambda: b"line one\r\nline two\r\n" * 300, []),
    "emoji": (lambda: ("caf\u00e9 \U0001f600 na\u00efve \u201cquotes\u201d\n" * 200).encode(), []),
    "emoji ascii": (lambda: ("caf\u00e9 \U0001f600 na\u00efve \u201cquotes\u201d\n" * 200).encode(), ["--ascii"]),
    "utf-16": (lambda: codecs.BOM_UTF16_LE + ("utf sixteen text\n" * 300).encode("utf-16-le"), []),
    "one 20 MB line": (lambda: b"abcdefghij " * 1_900_000, ["--eval-tokens", "10000"]),
}


@pytest.mark.parametrize("name", VALID_TEXTS)
def test_unusual_valid_text_trains(name, tmp_path):
    make, extra = VALID_TEXTS[name]
    corpus = write(tmp_path / "corpus.txt", make())
    result = run_cli(*TRAIN, str(corpus), "--preset", "tiny", "--hidden", "16", *extra,
                     "--runs-dir", str(tmp_path / "runs"), "--name", "ok", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "finished: reached max-steps 3" in result.stdout
    if "--ascii" in extra:
        assert "char vocab" in result.stdout and "\U0001f600" not in result.stdout


def run_copy(checkpoint: Path, tmp_path: Path) -> Path:
    """The module's good checkpoint copied into a run folder of this test's own, to resume."""
    run = tmp_path / "run"
    run.mkdir()
    latest = run / "latest.pt"
    latest.write_bytes(checkpoint.read_bytes())
    return latest


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--hidden", "32"], "--hidden cannot change when resuming (the run has 16, not 32)"),
        (["--model", "gru"], "--model cannot change when resuming (the run has 'lstm', not 'gru')"),
        (["--sampler", "random"], "--sampler cannot change when resuming"),
        (["--tokens", "word"], "--tokens cannot change when resuming"),
    ],
)
def test_a_resume_that_would_change_the_model_or_data_is_refused(args, fragment, checkpoint, tmp_path):
    copy = run_copy(checkpoint, tmp_path)
    result = run_cli("train", "--headless", "--resume", str(copy), "--max-steps", "6", *args)
    assert_one_line_error(result, fragment)
    assert copy.read_bytes() == checkpoint.read_bytes()


def test_bad_batch_size_word(tmp_path):
    assert_one_line_error(run_cli(*TRAIN, "--batch-size", "lots", "--runs-dir", str(tmp_path / "runs")),
                          "not a batch size: 'lots' (a whole number, or auto)")


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder nobody can write in: chmod for a user; for root, whom chmod does not stop, the
    immutable attribute."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root without chattr +i, so no folder can be made read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_runs_folder_is_a_clear_error(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    corpus = write(tmp_path / "c.txt", b"abcdefgh " * 300)
    with read_only(runs):
        result = run_cli(*TRAIN, str(corpus), "--preset", "tiny", "--runs-dir", str(runs))
    assert_one_line_error(result, f"cannot create a run folder in {runs}", "--runs-dir")
    assert not any(runs.iterdir())


def test_a_run_folder_turned_read_only_keeps_its_checkpoint_and_says_what_was_lost(checkpoint, tmp_path):
    latest = run_copy(checkpoint, tmp_path)
    run = latest.parent
    (run / ".lock").touch()
    with read_only(run):
        result = run_cli("train", "--headless", "--resume", str(latest), "--max-steps", "3")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    output = result.stdout + result.stderr
    assert f"cannot write checkpoint {latest}" in output and "the previous one is intact" in output
    assert ("error: the final checkpoint could not be written, so steps 4-6 are lost; the last checkpoint is step 3"
            in result.stderr)
    assert latest.read_bytes() == checkpoint.read_bytes()


def test_resume_takes_a_new_learning_rate_and_batch_shape(checkpoint, tmp_path):
    latest = run_copy(checkpoint, tmp_path)
    result = run_cli("train", "--headless", "--resume", str(latest), "--max-steps", "6", "--lr", "0.0005",
                     "--batch-size", "8", "--seq-len", "32")
    assert result.returncode == 0, result.stderr
    assert "resumed with batch-size 8 x seq-len 32" in result.stdout + result.stderr
    config = torch.load(latest, weights_only=True)["config"]
    assert (config["lr"], config["batch_size"], config["seq_len"]) == (0.0005, 8, 32)


def test_a_resume_with_the_run_own_settings_is_accepted(checkpoint, tmp_path, monkeypatch):
    """Flags equal to the run's own (the preset, the size, the corpus by a relative path) are fine."""
    latest = run_copy(checkpoint, tmp_path)
    monkeypatch.chdir(checkpoint.parent.parent.parent)  # where c.txt is
    result = run_cli("train", "c.txt", "--headless", "--resume", str(latest), "--max-steps", "2",
                     "--preset", "tiny", "--hidden", "16", "--model", "lstm")
    assert result.returncode == 0, result.stderr
    assert torch.load(latest, weights_only=True)["step"] == 5


def test_name_beside_resume_is_refused(checkpoint):
    assert_one_line_error(run_cli("train", "--headless", "--resume", str(checkpoint), "--name", "other"),
                          "--name names a new run")


def test_tensorboard_without_its_extra(tmp_path):
    corpus = write(tmp_path / "c.txt", b"abcdefgh " * 300)
    runs = tmp_path / "runs"
    result = run_cli(*TRAIN, str(corpus), "--tensorboard", "--runs-dir", str(runs))
    assert_one_line_error(result, "--tensorboard needs TensorBoard", "pip install 'charrnn-tui[tensorboard]'")
    assert not runs.exists() or not any(runs.iterdir())
