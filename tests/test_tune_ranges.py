"""`tune`'s ranges the user sets (`--model --layers --hidden --dropout --lr --seq-len`): they replace
the derived ones, the budget's weight bound holds within them, a space with nothing in it is one line
and exit 2, and the first trial is the default run brought into them."""

from __future__ import annotations

import dataclasses
import io
import json
import random

import pytest
from helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.cli.arguments import HelpFormatter
from charrnn_tui.engine.cli.main import parse
from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.tune.space import (
    TOKENS_PER_WEIGHT,
    Limits,
    Space,
    default_settings,
    empty_reason,
    search_space,
    within_limits,
)

SHAKESPEARE = cfg.REFERENCE_CHARS
TOP = 50_000_000  # tokens of the longest trial: a budget with room for any of these models


def space_of(limits: Limits, top: int = TOP) -> Space:
    return search_space("small", SHAKESPEARE, 1_000_000, "char", top, limits)


def test_a_range_given_replaces_the_derived_one_and_the_rest_stay_derived():
    derived = space_of(Limits())
    given_ = space_of(Limits(kinds=("gru", "lstm"), hidden=(64, 160), lr=(1e-3, 2e-3)))
    assert given_.kinds == ("gru", "lstm") and given_.hidden == (64, 160) and given_.lr == (1e-3, 2e-3)
    assert (given_.layers, given_.dropout, given_.seq_len) == (derived.layers, derived.dropout, derived.seq_len)
    draws = [given_.sample(random.Random(seed)) for seed in range(200)]
    assert {s.kind for s in draws} == {"gru", "lstm"}
    assert all(64 <= s.hidden <= 160 and 1e-3 <= s.lr <= 2e-3 for s in draws)
    assert all(s.layers in derived.layers and derived.dropout[0] <= s.dropout <= derived.dropout[1] for s in draws)


def test_one_value_fixes_a_setting():
    space = space_of(Limits(kinds=("rnn",), layers=(2,), hidden=(96, 96), dropout=(0.2, 0.2), lr=(3e-3, 3e-3),
                            seq_len=(100,)))
    for seed in range(20):
        s = space.sample(random.Random(seed))
        assert (s.kind, s.layers, s.hidden, s.dropout, s.lr, s.seq_len) == ("rnn", 2, 96, 0.2, 3e-3, 100)


def test_the_budgets_weight_bound_holds_inside_a_range_given():
    # 2M tokens: 400k weights at most. One layer of 256 fits; no two-layer model of 256 or more does.
    space = space_of(Limits(layers=(1, 2), hidden=(256, 1024)), top=2_000_000)
    assert space.trainable() == [("lstm", 1)]
    for s in (space.sample(random.Random(seed)) for seed in range(100)):
        assert s.layers == 1 and space.weights(s.kind, 1, s.hidden) <= 2_000_000 // TOKENS_PER_WEIGHT
    assert empty_reason(space, Limits(layers=(1, 2), hidden=(256, 1024))) is None


@pytest.mark.parametrize(("limits", "words"), [
    (Limits(hidden=(512, 128)), "--hidden 512:128 is empty"),
    (Limits(dropout=(0.4, 0.1)), "--dropout 0.4:0.1 is empty"),
    (Limits(lr=(0.01, 0.001)), "--lr 0.01:0.001 is empty"),
    (Limits(seq_len=(64, 1_000_000)), "--seq-len 1000000 is longer than the training split"),
    (Limits(hidden=(4096, 8192)), "nothing in the space can be trained in this budget"),
    (Limits(layers=(3,), hidden=(1024, 2048)), "fewer --layers or a longer --budget"),
])
def test_a_space_with_nothing_in_it_is_named_with_the_flag_to_change(limits, words):
    reason = empty_reason(space_of(limits, top=2_000_000), limits)
    assert reason is not None and words in reason and "\n" not in reason


def test_the_derived_space_is_never_empty_however_short_the_budget():
    space = space_of(Limits(), top=10)  # 2 weights: no model fits, the narrowest is drawn as before
    assert empty_reason(space, Limits()) is None
    assert space.sample(random.Random(0)).hidden == space.hidden[0]


def test_the_first_trial_is_the_default_run_brought_into_the_ranges():
    space = space_of(Limits())
    default = default_settings(space, SHAKESPEARE)
    assert within_limits(space, default, Limits()) == default  # no range given: the default as it is
    limits = Limits(kinds=("gru",), hidden=(512, 768), dropout=(0.3, 0.5), seq_len=(100, 200))
    moved = within_limits(space_of(limits), default, limits)
    assert (moved.kind, moved.hidden, moved.dropout, moved.seq_len) == ("gru", 512, 0.3, 100)
    assert (moved.layers, moved.lr) == (default.layers, default.lr)  # what was not limited stays
    tight = space_of(Limits(hidden=(128, 1024)), top=2_000_000)
    narrowed = within_limits(tight, dataclasses.replace(default, hidden=1024), Limits(hidden=(128, 1024)))
    assert narrowed.hidden == tight.widest(1) < 1024  # and no wider than the budget trains


@given(low=st.integers(1, 2048), span=st.integers(0, 2048), layers=st.sets(st.integers(1, 4), min_size=1),
       kinds=st.sets(st.sampled_from(cfg.MODEL_KINDS), min_size=1), top=st.integers(1_000, 10**9),
       seed=st.integers(0, 2**32))
def test_every_draw_lies_in_the_ranges_given_and_within_the_budget_where_any_model_does(low, span, layers, kinds,
                                                                                       top, seed):
    limits = Limits(kinds=tuple(sorted(kinds)), layers=tuple(sorted(layers)), hidden=(low, low + span))
    space = space_of(limits, top)
    s = space.sample(random.Random(seed))
    assert s.kind in kinds and s.layers in layers and low <= s.hidden <= low + span
    if empty_reason(space, limits) is None:
        assert space.weights(s.kind, s.layers, s.hidden) <= space.max_weights


def test_a_sweep_json_written_before_ranges_reads_with_its_one_kind():
    data = space_of(Limits()).to_dict()
    data["kind"] = data.pop("kinds")[0]
    assert Space.from_dict(json.loads(json.dumps(data))).kinds == ("lstm",)


# ---- the command line -------------------------------------------------------------------------------
def test_the_flags_parse_to_the_ranges():
    args = parse(["tune", "corpus.txt", "--budget", "5m", "--model", "GRU,lstm,gru", "--layers", "1:3",
                  "--hidden", "128:512", "--dropout", "0.1", "--lr", "1e-3:1e-2", "--seq-len", "128,64"])
    from charrnn_tui.engine.cli.tune_ranges import limits_from

    assert limits_from(args) == Limits(kinds=("gru", "lstm"), layers=(1, 2, 3), hidden=(128, 512),
                                       dropout=(0.1, 0.1), lr=(1e-3, 1e-2), seq_len=(64, 128))
    assert limits_from(parse(["tune", "corpus.txt", "--budget", "5m"])) == Limits()


@pytest.mark.parametrize(("argv", "words"), [
    (["--model", "cnn"], "unknown model kind 'cnn'"),
    (["--model", "lstm,,gru"], "separated by commas"),
    (["--layers", "0"], "--layers must be in [1, 8], not 0"),
    (["--layers", "3:1"], "--layers 3:1 is empty"),
    (["--layers", "1,2,3,4,5,6,7,8,1"], "at most 8 values"),
    (["--hidden", "wide"], "--hidden: not a whole number: 'wide'"),
    (["--hidden", "1:2:3"], "LOW:HIGH or one value"),
    (["--hidden", "64:100000"], "--hidden must be in [1, 16384]"),
    (["--dropout", "0:1"], "--dropout must be in [0, 1), not 1"),
    (["--lr", "0:0.01"], "--lr must be in (0, 10], not 0"),
    (["--lr", "nan"], "--lr must be in (0, 10], not nan"),
    (["--seq-len", "64,0"], "--seq-len must be in [1, 65536], not 0"),
])
def test_a_value_that_is_not_one_is_one_line_and_exit_2(capsys, argv, words):
    with pytest.raises(SystemExit) as stop:
        parse(["tune", "corpus.txt", "--budget", "5m", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1], err


def test_an_empty_space_is_refused_before_anything_is_made(repetitive_text, runs_dir):
    runs_dir.mkdir(mode=0o700)
    tiny = ["--preset", "tiny", "--first-rung", "10", "--parallel", "2", "--headless", "--runs-dir", str(runs_dir)]
    for argv, words in (
        (["--hidden", "512:128"], "--hidden 512:128 is empty"),
        (["--seq-len", "5000"], "--seq-len 5000 is longer than the training split"),
        (["--hidden", "16384", "--layers", "8"], "nothing in the space can be trained in this budget"),
    ):
        done = run_cli("tune", str(repetitive_text), "--budget", "1m", *argv, *tiny)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr, done.stderr
    assert list(runs_dir.iterdir()) == []


def test_a_new_sweep_keeps_the_ranges_and_starts_from_the_default_brought_into_them(repetitive_text, runs_dir):
    from charrnn_tui.engine.cli.tune_command import new_sweep
    from charrnn_tui.engine.tune.sweep import next_settings

    runs_dir.mkdir(mode=0o700)
    args = parse(["tune", str(repetitive_text), "--budget", "2m", "--preset", "tiny", "--first-rung", "10",
                  "--parallel", "2", "--model", "gru", "--hidden", "48:64", "--dropout", "0:0.1"])
    out = io.StringIO()
    folder, state = new_sweep(args, runs_dir, out)
    assert state.space.kinds == ("gru",) and state.space.hidden == (48, 64) and state.space.dropout == (0.0, 0.1)
    assert state.default is not None and (state.default.kind, state.default.hidden) == ("gru", 64)
    assert "the first trial is the default run brought into the ranges given: gru 1x64" in out.getvalue()
    assert next_settings(state) == state.default
    assert folder.parent == runs_dir


def test_resume_refuses_ranges(runs_dir):
    from charrnn_tui.engine.cli.tune_command import find_sweep

    with pytest.raises(ConfigError, match="give no --hidden"):
        find_sweep(parse(["tune", "--resume", "--hidden", "64:128"]), runs_dir)


def test_help_wraps_a_long_paragraph_and_keeps_an_indented_line_whole():
    formatter = HelpFormatter("prog")
    text = ("word " * 40).strip() + "\n  an indented example line that is longer than the width " + "x" * 60
    lines = formatter._fill_text(text, 100, "").splitlines()
    assert all(len(line) <= 100 for line in lines[:-1]) and len(lines) == 3
    assert lines[-1].startswith("  an indented example")


def test_tunes_help_fits_a_100_column_terminal(capsys):
    with pytest.raises(SystemExit):
        parse(["tune", "--help"])
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 100
