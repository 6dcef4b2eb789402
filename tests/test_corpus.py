import codecs

import pytest

from charrnn_tui.engine.errors import CorpusError
from charrnn_tui.engine.text.corpus import load_corpus


@pytest.mark.parametrize("name", ["shakespeare", "timemachine", "jokes"])
def test_bundled_corpora_load(name):
    corpus = load_corpus(name)
    assert len(corpus.text) > 100_000 and corpus.name == name


def test_default_is_shakespeare():
    assert load_corpus(None).text.startswith("First Citizen:")


def test_jokes_csv_reads_the_joke_column_only():
    text = load_corpus("jokes").text
    assert text.startswith("What did the bartender say to the jumper cables?")
    assert '"ID"' not in text and "\n2," not in text


def test_folder_of_txt_files(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("not me")
    assert load_corpus(str(tmp_path)).text == "first\nsecond"


def test_csv_column_and_missing_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,body\n1,"hello, there"\n2,second\n')
    assert load_corpus(str(path), csv_column="body").text == "hello, there\nsecond\n"
    with pytest.raises(CorpusError, match="no column 'text'.*columns: id, body"):
        load_corpus(str(path), csv_column="text")


def test_invalid_utf8_names_file_and_offset(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin.txt: not valid utf-8 at byte offset 3; pass --encoding"):
        load_corpus(str(path))
    assert load_corpus(str(path), encoding="latin-1").text == "caf\u00e9 au lait"


def test_utf16_with_bom_is_decoded(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + "hello\r\nworld".encode("utf-16-le"))
    assert load_corpus(str(path)).text == "hello\nworld"


def test_binary_empty_and_missing(tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    with pytest.raises(CorpusError, match="binary data"):
        load_corpus(str(binary))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(str(empty))
    with pytest.raises(CorpusError, match="no such file"):
        load_corpus(str(tmp_path / "nope.txt"))
    folder = tmp_path / "nothing"
    folder.mkdir()
    with pytest.raises(CorpusError, match="no .txt files"):
        load_corpus(str(folder))


def test_ascii_folding(tmp_path):
    path = tmp_path / "u.txt"
    path.write_text("“Café” — naïve 🙂\n", encoding="utf-8")
    assert load_corpus(str(path), ascii_only=True).text.isascii()
    assert load_corpus(str(path)).text == "“Café” — naïve 🙂\n"
