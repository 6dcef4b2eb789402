import pytest
import torch
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.text.vocab import (
    UNK,
    CharVocab,
    WordVocab,
    build_vocab,
    compact_dtype,
    tokenize_words,
    vocab_from_dict,
)


def test_char_round_trip_ascii_and_unicode():
    text = "Hello, wörld!\n“Quotes” and emoji 🙂."
    vocab = CharVocab.build(text)
    ids = vocab.encode(text)
    assert ids.dtype == torch.uint8
    assert vocab.decode(ids.tolist()) == text
    assert vocab.tokens == sorted(set(text))
    assert vocab_from_dict(vocab.to_dict()).tokens == vocab.tokens


def test_char_encode_rejects_unknown_characters_with_offset():
    vocab = CharVocab.build("abc")
    try:
        vocab.encode("abxc")
    except Exception as e:
        assert "'x'" in str(e) and "offset 2" in str(e)
    else:
        raise AssertionError("expected an error")


def test_char_prompt_folds_or_drops_unknown_characters():
    vocab = CharVocab.build("abcdefghijklmnopqrstuvwxyz ")
    ids, notes = vocab.encode_prompt("café жы☃")
    assert vocab.decode(ids) == "cafe zhy"
    assert any("'é' -> 'e'" in n for n in notes)
    assert any("dropped" in n for n in notes)  # the snowman has no ASCII form


def test_word_round_trip_and_unk():
    text = "the cat sat.\nthe cat ran!\nthe dog sat."
    vocab = WordVocab.build(text, min_freq=2)
    assert vocab.tokens[0] == UNK
    assert "".join(tokenize_words(text)) == text
    ids = vocab.encode(text).tolist()
    decoded = vocab.decode(ids)
    assert decoded.replace(UNK, "?") == "the cat sat.\nthe cat??\nthe? sat."  # " ran", "!", " dog" are rare
    assert vocab_from_dict(vocab.to_dict()).tokens == vocab.tokens


def test_word_min_freq_one_round_trips_exactly():
    text = "Words, words; and more words.\n"
    vocab = build_vocab(text, "word", min_freq=1)
    assert vocab.decode(vocab.encode(text).tolist()) == text


def test_word_prompt_maps_unknown_words_to_unk():
    vocab = WordVocab.build("hello world hello world", min_freq=1)
    ids, notes = vocab.encode_prompt("hello mars")
    assert ids[-1] == 0 and notes == ["'mars' -> <unk>"]


def test_large_vocab_uses_wider_dtype():
    text = "".join(chr(0x4E00 + i) for i in range(300))
    vocab = CharVocab.build(text)
    assert vocab.encode(text).dtype == torch.int16


@settings(max_examples=examples(200), deadline=None)
@given(text=st.text(min_size=1, max_size=300))
def test_char_encode_decode_round_trips_any_text(text):
    vocab = CharVocab.build(text)
    ids = vocab.encode(text)
    assert vocab.decode(ids.tolist()) == text
    assert ids.dtype == compact_dtype(len(vocab)) and int(ids.max()) < len(vocab)
    restored = vocab_from_dict(vocab.to_dict())
    assert restored.decode(restored.encode(text).tolist()) == text


@settings(max_examples=examples(200), deadline=None)
@given(text=st.text(min_size=1, max_size=300))
def test_word_encode_decode_round_trips_any_text_when_every_word_is_kept(text):
    vocab = WordVocab.build(text, min_freq=1)
    assert vocab.decode(vocab.encode(text).tolist()) == text


@settings(max_examples=examples(200), deadline=None)
@given(known=st.text(alphabet="abc \n", min_size=1, max_size=50), prompt=st.text(max_size=80))
def test_any_prompt_encodes_to_known_ids_or_a_note_never_an_error(known, prompt):
    for vocab in (CharVocab.build(known), WordVocab.build(known, min_freq=1)):
        ids, notes = vocab.encode_prompt(prompt)
        assert all(0 <= i < len(vocab) for i in ids)
        assert len(notes) <= len(prompt)


def test_word_vocabulary_orders_by_frequency_then_alphabet_and_keeps_words_seen_twice_by_default():
    vocab = WordVocab.build("x b a b c c c d d e")
    assert vocab.tokens[:1] == [UNK]
    words = [t for t in vocab.tokens[1:] if t.strip()]
    assert words == [" c", " b", " d"]  # c three times; b and d twice, in alphabetical order; a and e once
    assert vocab.encode("b a").dtype == compact_dtype(len(vocab)) == torch.uint8


def test_a_malformed_word_vocabulary_is_refused():
    from charrnn_tui.engine.errors import CheckpointError

    for tokens in ([], ["a", UNK], [UNK, "a", "a"]):
        with pytest.raises(CheckpointError, match="^word vocabulary must start with <unk> and hold distinct tokens$"):
            WordVocab(tokens)
    assert WordVocab([UNK, "a"]).tokens == [UNK, "a"]


def test_word_prompts_fold_accents_and_report_unknown_words():
    vocab = WordVocab.build("the cafe is open. the cafe is shut.", min_freq=1)
    ids, notes = vocab.encode_prompt("the café zebra")
    assert vocab.decode(ids) == f"the cafe{UNK}"  # no lone space in this vocabulary to keep
    assert notes == ["'café' -> 'cafe'", f"'zebra' -> {UNK}"]
    spaced = WordVocab.build("the  cafe is open.  the cafe is shut.", min_freq=1)
    ids, _ = spaced.encode_prompt("the zebra")
    assert spaced.decode(ids) == f"the {UNK}"


def test_words_carry_the_space_before_them_and_punctuation_and_contractions_read_right():
    text = "Who's there? What's up, doc?\n\nThe  end (really)."
    assert tokenize_words(text) == ["Who's", " there", "?", " What's", " up", ",", " doc", "?", "\n", "\n", "The",
                                    " ", " end", " (", "really", ")", "."]
    assert tokenize_words("don\u2019t") == ["don\u2019t"]
    assert tokenize_words(text, scheme=1)[:4] == ["Who", "'", "s", " "]  # checkpoints from before


@pytest.mark.parametrize("name", ["shakespeare", "timemachine", "jokes"])
def test_the_bundled_corpora_come_back_exactly_from_their_word_tokens(name):
    from charrnn_tui.engine.text.corpus import load_corpus

    text = load_corpus(name).text
    vocab = WordVocab.build(text, min_freq=1)
    ids = vocab.encode(text)
    assert vocab.decode(ids.tolist()) == text
    assert len(vocab.split(text)) == len(ids)


def test_a_word_vocabulary_from_before_scheme_2_keeps_cutting_text_its_way():
    from charrnn_tui.engine.errors import CheckpointError
    from charrnn_tui.engine.text.vocab import vocab_from_dict

    old = vocab_from_dict({"kind": "word", "tokens": [UNK, "Who", "'", "s", " ", "there"]})
    assert old.scheme == 1 and old.encode("Who's there").tolist() == [1, 2, 3, 4, 5]
    new = WordVocab.build("Who's there " * 3, min_freq=1)
    assert vocab_from_dict(new.to_dict()).scheme == 2 and new.to_dict()["scheme"] == 2
    with pytest.raises(CheckpointError, match="unknown scheme 7"):
        vocab_from_dict({"kind": "word", "tokens": [UNK], "scheme": 7})


@pytest.mark.parametrize(("data", "error"), [
    ("not a dict", "checkpoint vocabulary is malformed"),
    ({"kind": "char"}, "checkpoint vocabulary is malformed"),
    ({"kind": "char", "tokens": ["a", 3]}, "checkpoint vocabulary holds non-text tokens"),
    ({"kind": "bytes", "tokens": ["a"]}, "checkpoint vocabulary has unknown kind 'bytes'"),
])
def test_a_broken_vocabulary_in_a_checkpoint_is_named(data, error):
    from charrnn_tui.engine.errors import CheckpointError

    with pytest.raises(CheckpointError) as raised:
        vocab_from_dict(data)
    assert str(raised.value) == error


@pytest.mark.parametrize("tokens", [["ab", "c"], ["a", "a"], [], ["a", ""]])
def test_a_character_vocabulary_from_a_checkpoint_must_be_distinct_single_characters(tokens):
    from charrnn_tui.engine.errors import CheckpointError
    from charrnn_tui.engine.text.vocab import vocab_from_dict

    with pytest.raises(CheckpointError, match="distinct single characters"):
        vocab_from_dict({"kind": "char", "tokens": tokens})


def test_an_empty_text_has_no_character_vocabulary():
    from charrnn_tui.engine.errors import CheckpointError
    from charrnn_tui.engine.text.vocab import CharVocab

    with pytest.raises(CheckpointError):
        CharVocab.build("")
    assert CharVocab.build("ba\n").tokens == ["\n", "a", "b"]
