"""`tune`: the search space from the corpus and the budget, successive halving's decisions on
synthetic losses, and the command end to end on a tiny corpus (a sweep, a kill and a resume, bad input)."""

from __future__ import annotations

import json
import random

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.tune.space import TOKENS_PER_WEIGHT, default_settings, search_space

SHAKESPEARE = cfg.REFERENCE_CHARS


# ---- the space ------------------------------------------------------------------------------------
def test_the_width_follows_the_corpus_by_its_fourth_root():
    small = search_space("small", 179_000, 160_000, "char", 50_000_000)
    reference = search_space("small", SHAKESPEARE, 1_000_000, "char", 50_000_000)
    assert reference.hidden == (192, 768)  # the preset's 384, halved and doubled
    assert small.hidden == (128, 480)  # 384 x (179k / 1.1M)^0.25 = 243: 128 to 480
    assert small.layers == (1,) and reference.layers == (1, 2)  # a second layer only for a text that suits the model
    assert search_space("large", 30_000_000, 27_000_000, "char", 10**9).layers == (1, 2, 3)


def test_no_trial_is_wider_than_the_budget_can_train():
    space = search_space("small", SHAKESPEARE, 1_000_000, "char", 2_000_000)
    limit = 2_000_000 // TOKENS_PER_WEIGHT
    model = cfg.ModelConfig(kind="lstm", layers=1, embedding=space.embedding)
    assert cfg.recurrent_parameters(model, space.widest(1)) <= limit < cfg.recurrent_parameters(
        model, space.widest(1) + 32)
    rng = random.Random(0)
    assert all(s.hidden <= space.widest(s.layers) for s in (space.sample(rng) for _ in range(200)))


def test_dropout_and_the_window_follow_the_epochs_and_updates_the_budget_buys():
    once = search_space("small", SHAKESPEARE, 1_000_000, "char", 900_000)  # under an epoch: little to over-fit
    often = search_space("small", SHAKESPEARE, 1_000_000, "char", 50_000_000)
    assert once.dropout == (0.0, 0.1) and often.dropout == (0.1, 0.5)
    assert once.seq_len == (64,)  # 900k tokens are 440 steps of 16 x 128: too few updates to halve them
    assert often.seq_len == (64, 128)
    assert search_space("small", SHAKESPEARE, 200_000, "word", 50_000_000).seq_len == (32, 64)


def test_the_sampler_is_seeded_and_stays_in_its_ranges():
    space = search_space("small", SHAKESPEARE, 1_000_000, "char", 50_000_000)
    draws = [space.sample(random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    for s in (space.sample(random.Random(seed)) for seed in range(100)):
        assert space.hidden[0] <= s.hidden <= space.hidden[1] and s.hidden % 32 == 0
        assert space.lr[0] * 0.99 <= s.lr <= space.lr[1] * 1.01 and space.dropout[0] <= s.dropout <= space.dropout[1]
        assert s.layers in space.layers and s.seq_len in space.seq_len
        assert s.batch_size == cfg.fitted_batch_size(16, s.seq_len, 1_000_000)
    assert type(space).from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_the_first_trial_is_the_default_run():
    space = search_space("small", 179_000, 160_000, "char", 50_000_000)
    default = default_settings(space, 179_000)
    assert (default.layers, default.hidden, default.dropout, default.lr) == (1, 256, 0.25, 8e-3)  # fit_to_corpus's
