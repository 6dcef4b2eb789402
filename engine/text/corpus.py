"""Reading training text: a file, a folder of .txt files, a CSV column or a bundled corpus."""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from charrnn_tui.corpora import BUNDLED, bundled_path
from charrnn_tui.engine.errors import CorpusError


@dataclass(frozen=True)
class Corpus:
    name: str  # short name, used in run names
    source: str  # what was read, for people
    text: str


def load_corpus(
    spec: str | None,
    *,
    csv_column: str | None = None,
    ascii_only: bool = False,
    encoding: str | None = None,
    csv_as_text: bool = True,
) -> Corpus:
    """Load the text named by `spec`: a bundled corpus name, a file, a folder or a CSV file.
    `csv_as_text=False` (what the user typed): a .csv file without `csv_column` is refused with its
    columns, rather than trained on with its ids, commas and quotes."""
    from charrnn_tui.corpora import DEFAULT

    spec = spec or DEFAULT
    if spec in BUNDLED and not Path(spec).exists():
        bundled = BUNDLED[spec]
        path = bundled_path(spec)
        column = csv_column or bundled.csv_column
        text = _read_csv(path, column, encoding) if column else read_text_file(path, encoding)
        corpus = Corpus(spec, f"bundled:{spec} ({bundled.description})", text)
    else:
        corpus = _load_path(Path(spec).expanduser(), csv_column, encoding, csv_as_text)
    text = corpus.text
    if ascii_only:
        text = fold_to_ascii(text)
    if not text.strip():
        raise CorpusError(f"{corpus.source}: no text to train on (empty or only whitespace)")
    return Corpus(corpus.name, corpus.source, text)


def corpus_spec(spec: str | None) -> str:
    """A corpus as a run records it: the bundled default for None, an absolute path for a file or
    folder (so a run resumes from any directory), a bundled name as it is."""
    from charrnn_tui.corpora import DEFAULT

    spec = spec or DEFAULT
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def fold_to_ascii(text: str) -> str:
    """Transliterate to ASCII with unidecode (é -> e, “ -> "), keeping newlines."""
    from unidecode import unidecode

    if text.isascii():
        return text
    return unidecode(text)


def _load_path(path: Path, csv_column: str | None, encoding: str | None, csv_as_text: bool = True) -> Corpus:
    if not path.exists():
        names = ", ".join(BUNDLED)
        raise CorpusError(f"{path}: no such file or folder (bundled corpora: {names})")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise CorpusError(f"{path}: folder holds no .txt files")
        parts = [read_text_file(p, encoding) for p in files]
        text = "\n".join(p for p in parts if p)
        return Corpus(path.name, f"{path}/ ({len(files)} .txt files)", text)
    if csv_column is not None:
        return Corpus(path.stem, f"{path} (column {csv_column})", _read_csv(path, csv_column, encoding))
    if not csv_as_text:
        refuse_csv_without_column(path, encoding)
    return Corpus(path.stem, str(path), read_text_file(path, encoding))


def read_text_file(path: Path, encoding: str | None = None) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_text(data, str(path), encoding)


def decode_text(data: bytes, source: str, encoding: str | None = None) -> str:
    """Decode bytes as text: UTF-8 (or a UTF-16/32 BOM, or `encoding`), CRLF folded to LF."""
    if not data:
        raise CorpusError(f"{source}: file is empty")
    if encoding is None:
        encoding = _encoding_from_bom(data)
    if encoding is None:
        nul = data.find(b"\x00")
        if nul >= 0:
            raise CorpusError(
                f"{source}: binary data (NUL byte at offset {nul}); "
                "if it is UTF-16 text without a BOM, pass --encoding utf-16-le"
            )
        encoding = "utf-8"
    try:
        text = data.decode(encoding)
    except LookupError:
        raise CorpusError(f"{source}: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as e:
        hint = "pass --encoding (e.g. latin-1 or cp1252)" if encoding.startswith("utf-8") else "check --encoding"
        raise CorpusError(f"{source}: not valid {encoding} at byte offset {e.start}; {hint}") from None
    text = text.lstrip("\ufeff")
    if "\r" in text:  # each replace copies the whole text: only when there is something to fold
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        raise CorpusError(f"{source}: text contains NUL characters; is it a binary file?")
    return text


def _encoding_from_bom(data: bytes) -> str | None:
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return name
    return None


def refuse_csv_without_column(path: Path, encoding: str | None = None) -> None:
    """A .csv file read without --csv-column would train on its ids, commas and quotes: refused,
    with the columns to choose from."""
    if path.suffix.lower() == ".csv" and path.is_file():
        raise CorpusError(f"{path}: a CSV file: choose the column to train on with --csv-column NAME (columns: "
                          f"{columns_text(csv_columns(path, encoding))}), or --as-text to read the whole file "
                          "as text")


def csv_columns(path: Path, encoding: str | None = None, limit: int = 1 << 16) -> list[str]:
    """The header row of a CSV file, read from its first `limit` bytes; [] where there is none."""
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
        # Cut anywhere, so a character may be split: replaced, not refused.
        text = head.decode(encoding or _encoding_from_bom(head) or "utf-8", errors="replace").lstrip("\ufeff")
        return next(csv.reader(io.StringIO(text)), [])
    except (OSError, LookupError, csv.Error):
        return []


def columns_text(columns: list[str], most: int = 20) -> str:
    """Column names for a one-line message: printable, each short, at most `most` of them."""
    shown = [c[:40] if c.isprintable() else repr(c[:40]) for c in columns[:most]]
    return (", ".join(shown) + (f", and {len(columns) - most} more" if len(columns) > most else "")) or "none found"


def _read_csv(path: Path, column: str, encoding: str | None) -> str:
    text = read_text_file(path, encoding)
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise CorpusError(f"{path}: not a CSV file with a header row") from None
    if column not in header:
        raise CorpusError(f"{path}: no column {column!r} (columns: {columns_text(header)})")
    index = header.index(column)
    rows: list[str] = []
    try:
        for row in reader:
            if index < len(row) and row[index].strip():
                rows.append(row[index].strip())
    except csv.Error as e:
        raise CorpusError(f"{path}: broken CSV at line {reader.line_num}: {e}") from None
    if not rows:
        raise CorpusError(f"{path}: column {column!r} is empty")
    return "\n".join(rows) + "\n"
