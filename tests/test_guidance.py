"""The command line's answers to the usual slips (issue 24): each one line naming the thing and what
to do, exit 2, and nothing started or written."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import LocalRun, run_cli, tiny_config

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.cli.main import check_train_corpus, parse
from charrnn_tui.engine.cli.suggest import closest, unknown_option
from charrnn_tui.engine.errors import CheckpointError, ConfigError, CorpusError
from charrnn_tui.engine.model.sampling import top_next
from charrnn_tui.engine.printable import percent
from charrnn_tui.engine.text.vocab import build_vocab
from charrnn_tui.tui.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the console script's main in-process; it must exit 2 with one line on stderr."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ---- 1. a mistyped command or flag ------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "guess"), [
    (["stats"], "did you mean 'runs'?"),
    (["sampel", "tm"], "did you mean 'sample'?"),
    (["shakespear"], "did you mean 'shakespeare'?"),
    (["resume"], "did you mean 'train --resume'?"),
])
def test_a_first_word_that_is_no_command_and_no_corpus_gets_a_guess(capsys, argv, guess):
    err = one_line_error(capsys, argv)
    assert f"unknown command or corpus {argv[0]!r}" in err and guess in err


def test_a_first_word_with_nothing_close_lists_the_commands_and_corpora(capsys):
    err = one_line_error(capsys, ["zzqx"])
    assert "commands are train, sample" in err and "bundled corpora shakespeare, timemachine, jokes" in err


def test_a_mistyped_path_gets_the_file_beside_it(capsys, tmp_path):
    (tmp_path / "novel.txt").write_text("some text\n")
    err = one_line_error(capsys, [str(tmp_path / "novle.txt")])
    assert f"{tmp_path / 'novle.txt'}: no such file or folder; did you mean {tmp_path / 'novel.txt'}?" in err


def test_an_existing_file_or_bundled_corpus_as_first_word_is_train(tmp_path):
    (tmp_path / "status").write_text("a corpus that happens to be called status\n")
    assert parse(["timemachine"]).command == "train"
    assert parse([str(tmp_path / "status")]).corpus == str(tmp_path / "status")


@pytest.mark.parametrize(("argv", "said"), [
    (["sample", "x", "--temprature", "1"], "charrnn-tui sample: error: unknown option --temprature; did you mean "
                                           "--temperature? (see charrnn-tui sample --help)"),
    (["timemachine", "--max-step", "3"], "charrnn-tui train: error: unknown option --max-step; did you mean "
                                         "--max-steps? (see charrnn-tui train --help)"),
    (["runs", "--jsn"], "unknown option --jsn; did you mean --json? (see charrnn-tui runs --help)"),
    (["stop", "a", "b"], "unexpected argument 'b' (see charrnn-tui stop --help)"),
])
def test_a_mistyped_flag_gets_a_guess_and_the_commands_own_help(capsys, argv, said):
    assert said in one_line_error(capsys, argv)


def test_suggestions():
    assert closest("evaluate", ["train", "eval"]) == "eval"
    assert closest("xyz", ["train", "eval"]) is None
    assert unknown_option("--seqlen=4", ["--seq-len", "--seed"]) == "unknown option --seqlen; did you mean --seq-len?"
    assert unknown_option("--zzz", ["--seq-len"]) == "unknown option --zzz"


# ---- 2. the app without a terminal ------------------------------------------------------------------
def test_the_app_without_a_terminal_starts_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["timemachine", "--runs-dir", str(runs)]) == 2  # pytest's stdin is not a terminal
    err = capsys.readouterr().err
    assert err == ("charrnn-tui: error: the app needs a terminal (stdin and stdout here are not one): use "
                   "`charrnn-tui train --headless ...` for a progress line, or `--detach` to train in the background\n")
    assert not runs.exists()


def test_attach_without_a_terminal_says_what_to_use_instead(tmp_path, capsys, repetitive_text):
    runs = tmp_path / "runs"
    run = LocalRun(tiny_config(repetitive_text), runs, name="live").start()
    try:
        assert main(["attach", "live", "--runs-dir", str(runs)]) == 2
        assert capsys.readouterr().err == (
            "charrnn-tui: error: attach opens the app, which needs a terminal (stdin and stdout here are not one); "
            f"`charrnn-tui runs --runs-dir {runs}` lists the runs, `charrnn-tui stop live --runs-dir {runs}` ends "
            "this one\n")
    finally:
        run.stop()


def test_the_app_is_refused_in_a_subprocess_with_output_to_a_file():
    result = run_cli("timemachine", "--runs-dir", "/nonexistent/never-made")
    assert result.returncode == 2 and result.stdout == "" and "needs a terminal" in result.stderr


# ---- 3. a CSV file without a column -----------------------------------------------------------------
@pytest.fixture
def jokes_csv(tmp_path):
    path = tmp_path / "jokes.csv"
    path.write_text('ID,Joke\n1,"Why did the chicken, well, cross"\n2,"Knock knock"\n')
    return path


def test_a_csv_without_a_column_is_refused_with_its_columns(jokes_csv, tmp_path):
    from charrnn_tui.engine.cli.arguments import load_train_corpus

    args = parse(["train", str(jokes_csv), "--headless"])
    with pytest.raises(CorpusError, match=r"jokes.csv: a CSV file: choose the column to train on with --csv-column "
                                          r"NAME \(columns: ID, Joke\), or --as-text"):
        load_train_corpus(args)
    with pytest.raises(CorpusError, match="columns: ID, Joke"):
        check_train_corpus(args)  # what the app checks before it opens
    assert "1,\"Why did" in load_train_corpus(parse(["train", str(jokes_csv), "--as-text"])).text
    assert load_train_corpus(parse(["train", str(jokes_csv), "--csv-column", "Joke"])).text.startswith("Why did")


def test_the_app_checks_the_corpus_before_it_opens(tmp_path):
    with pytest.raises(ConfigError, match="unknown corpus 'timemachin'; did you mean 'timemachine'"):
        check_train_corpus(parse(["train", "timemachin"]))
    check_train_corpus(parse(["train", "timemachine"]))  # a corpus that is there: nothing to say


def test_headless_train_on_a_csv_without_a_column_writes_nothing(jokes_csv, tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("train", str(jokes_csv), "--headless", "--runs-dir", str(runs))
    assert result.returncode == 2 and "choose the column" in result.stderr and result.stderr.count("\n") == 1
    assert not runs.exists() or not any(runs.iterdir())


# ---- 4. eval says what it scored; vocabularies with nothing to learn ----------------------------------
def test_a_word_vocabulary_that_leaves_most_text_unknown_is_refused_with_what_it_kept():
    text = "the cat sat on the mat and the dog ran far away " * 3 + " ".join(f"w{i}" for i in range(400))
    with pytest.raises(ConfigError) as refused:
        build_vocab(text, "word", min_freq=100_000)
    said = str(refused.value)
    assert said.startswith("--min-freq 100000 keeps 0 of the corpus's") and "100% of its tokens <unk>" in said
    suggested = int(said.split("lower it (--min-freq ")[1].split()[0])
    vocab = build_vocab(text, "word", min_freq=suggested)  # what it suggests works
    assert len(vocab) > 3
    with pytest.raises(ConfigError, match="single distinct character"):
        build_vocab("aaaa", "char")


def test_next_never_prints_nan_and_never_lists_a_masked_unk():
    probs, ids = top_next(torch.tensor([5.0, 1.0, 0.0]), 5, mask_unk=True)
    assert 0 not in ids.tolist() and len(ids) == 2
    probs, _ = top_next(torch.tensor([float("nan"), 1.0]), 2, mask_unk=False)
    assert all(math.isfinite(p) for p in probs.tolist())
    with pytest.raises(ConfigError, match="nothing but <unk>"):
        top_next(torch.tensor([1.0]), 5, mask_unk=True)


def trained(tmp_path, name, text, **overrides):
    from charrnn_tui.engine.run.trainer import Trainer

    corpus = tmp_path / f"{name}.txt"
    corpus.write_text(text)
    Trainer(tiny_config(corpus, max_steps=3, **overrides), runs_dir=tmp_path / "runs", run_name=name).run()
    return tmp_path / "runs" / name


def test_eval_of_a_word_model_says_what_share_is_unk(tmp_path):
    run = trained(tmp_path, "words", "the cat sat on the mat. the dog sat on the log. " * 40, tokens="word",
                  min_freq=1)
    other = tmp_path / "other.txt"
    other.write_text("the zebra sat on the quokka. " * 10)
    result = run_cli("eval", str(run), str(other))
    assert result.returncode == 0, result.stderr
    assert "note: 20 of the tokens (28.6%) are <unk>, words the model's vocabulary does not hold" in result.stdout


def test_eval_of_an_ascii_model_says_the_text_was_folded(tmp_path):
    run = trained(tmp_path, "ascii", "plain ascii text, cafe and naive. " * 40, ascii=True)
    other = tmp_path / "accents.txt"
    other.write_text("café naïve ☃\n" * 5)
    result = run_cli("eval", str(run), str(other))
    assert result.returncode == 0, result.stderr
    assert "note: the text was folded to ASCII, as the model's training text was (65 characters read, " in result.stdout
    assert "once folded): the score is of the folded text" in result.stdout


def test_a_checkpoint_whose_vocabulary_is_only_unk_is_refused(tmp_path):
    from charrnn_tui.engine.checkpoint import load_checkpoint, save_checkpoint
    from charrnn_tui.engine.model.inference import load_model

    run = trained(tmp_path, "words", "the cat sat on the mat. " * 40, tokens="word", min_freq=1)
    checkpoint = load_checkpoint(run / "latest.pt")
    checkpoint["vocab"]["tokens"] = ["<unk>"]
    save_checkpoint({k: v for k, v in checkpoint.items() if k not in ("format", "format_version")}, run / "one.pt")
    with pytest.raises(CheckpointError, match="vocabulary holds only '<unk>': it has nothing to write or score"):
        load_model(run / "one.pt", "cpu")


# ---- 6. runs that are what they say ---------------------------------------------------------------
def test_the_fit_to_a_small_corpus_is_said_at_start_up():
    given = cfg.ModelConfig(layers=3, hidden=384, dropout=0.0)
    fitted = cfg.ModelConfig(layers=3, hidden=96, dropout=0.25)
    assert cfg.describe_fit(given, fitted, 178_887) == (
        "a small corpus (178,887 characters; preset small suits 1,115,394): lstm 3x384 narrowed to 3x96 "
        "and dropout 0 raised to 0.25 (--hidden and --dropout set them yourself)")
    assert cfg.describe_fit(given, given, 178_887) is None


def test_headless_start_up_says_how_the_model_was_fitted(tmp_path):
    result = run_cli("train", "timemachine", "--layers", "3", "--max-steps", "1", "--headless", "--device", "cpu",
                     "--threads", "1", "--sample-interval", "0", "--runs-dir", str(tmp_path / "runs"),
                     "--val-fraction", "0.001")
    assert result.returncode == 0, result.stderr
    assert "lstm 3x384 narrowed to 3x96" in result.stdout and "run timemachine-lstm3x96-" in result.stdout
    assert "(last 0.1%)" in result.stdout


def test_percent_keeps_small_fractions():
    assert (percent(0.1), percent(0.001), percent(0.125), percent(0.0005)) == ("10%", "0.1%", "12.5%", "0.05%")


def test_a_default_run_name_gives_the_layers_where_there_are_several():
    from charrnn_tui.engine.runs import default_run_name

    assert default_run_name("timemachine", "lstm", 96, 3).startswith("timemachine-lstm3x96-")
    assert default_run_name("jokes", "gru", 224).startswith("jokes-gru224-")


@pytest.mark.parametrize("command", [["timemachine", "--headless"], ["sample", "run"]])
def test_a_temperature_outside_what_runs_take_is_refused_on_the_command_line(capsys, command):
    err = one_line_error(capsys, [*command, "--temperature", "1e-300"])
    assert "argument --temperature: must be from 0.05 to 10, not 1e-300" in err
