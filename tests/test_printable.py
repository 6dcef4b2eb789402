"""Text from a file, a run or the model reaches the terminal printable (engine/printable.py): no
escape sequence from a corpus, a status.json, a folder's name or another client's prompt gets to
act on the terminal, while `sample` to a pipe still writes the model's exact text."""

from __future__ import annotations

import argparse
import io
import unicodedata

import pytest
from helpers import examples, tiny_config
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rich.text import Text

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.printable import STAND_IN, printable, printable_line
from charrnn_tui.engine.runs import write_status

ESC = "\x1b"
TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
BIDI = {*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}


def controls(text: str) -> set[str]:
    """C0 and C1 controls and DEL (category Cc), bidi overrides and lone surrogates in `text`."""
    return {c for c in text if unicodedata.category(c) in ("Cc", "Cs") or c in BIDI}


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as sys.stdout does in one."""

    def isatty(self) -> bool:
        return True


# ---- the function ------------------------------------------------------------------------------
@settings(max_examples=examples(500), deadline=None)
@given(st.text(st.characters(exclude_categories=())), st.booleans())  # surrogates too
@example("\udcff name \x1b[2J \u202e \x9b\n\t", True)  # one of each kind, whatever is drawn
def test_nothing_that_acts_on_a_terminal_is_left_and_each_character_has_one_stand_in(text, keep_newlines):
    shown = printable(text, keep_newlines)
    allowed = {"\n", "\t"} if keep_newlines else set()
    assert controls(shown) <= allowed
    assert len(shown) == len(text)  # a sample's token offsets still fit
    assert all(a == b for a, b in zip(text, shown, strict=True) if not controls(a))  # the rest untouched
    if keep_newlines:  # a block of text keeps its lines and tabs, whatever else it holds
        assert all(a == b for a, b in zip(text, shown, strict=True) if a in "\n\t")
    shown.encode("utf-8")  # no lone surrogate left to fail a UTF-8 stream


@settings(max_examples=examples(500), deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="".join(BIDI))
               | st.sampled_from("\n\t")))
def test_printable_text_passes_unchanged(text):
    assert printable(text) is text or printable(text) == text
    assert printable_line(text.replace("\n", " ").replace("\t", " ")) == text.replace("\n", " ").replace("\t", " ")


@pytest.mark.parametrize(("text", "shown"), [
    (TITLE + "x", "␛]0;pwned␇x"), ("a\x9b2Jb", f"a{STAND_IN}2Jb"), ("abc\u202edef", f"abc{STAND_IN}def"),
    ("\x7f\x00\r", "␡␀␍"), ("name\udcff", f"name{STAND_IN}"), ("a\nb\tc", "a\nb\tc"),
])
def test_stand_ins(text, shown):
    assert printable(text) == shown
    assert printable_line("a\nb\tc") == "a␊b␉c"


# ---- the command line -------------------------------------------------------------------------
def test_runs_prints_no_escape_sequence_from_a_status_file_or_a_folder_name(runs_dir):
    from charrnn_tui.engine.cli.run_commands import run_runs

    runs_dir.mkdir(parents=True)
    for name in ("plain", f"evil{ESC}[2J"):
        (runs_dir / name).mkdir()
        write_status(runs_dir / name, {"state": f"finished{TITLE}", "step": 3, "corpus": f"c{ESC}[31m\u202eorp",
                                       "model": f"{ESC}]8;;http://x\x07lstm", "viewers": 0})
    out = io.StringIO()
    assert run_runs(argparse.Namespace(runs_dir=runs_dir, json=False), out) == 0
    table = out.getvalue()
    assert not controls(table.replace("\n", "")), repr(table)
    assert "evil" in table and "[2J" in table and "pwned" in table
    listed = io.StringIO()
    run_runs(argparse.Namespace(runs_dir=runs_dir, json=True), listed)
    assert ESC not in listed.getvalue()  # JSON escapes them: \u001b


def test_the_runs_table_makes_each_cell_printable_whatever_the_entries_hold(monkeypatch, tmp_path):
    """The table itself, given entries whose fields are raw (as status.json and a folder's name can
    hold them), prints none of their escapes."""
    from charrnn_tui.engine import runs
    from charrnn_tui.engine.cli.run_commands import CELL_WIDTH, run_runs

    raw = runs.RunEntry(name=f"evil{ESC}[2J", path=tmp_path, state=f"finished{TITLE}", live=False, step=3,
                        best_val=None, corpus=f"c{ESC}[31m\u202eorp" + "x" * 100, model=f"{ESC}]8;;http://x\x07lstm",
                        viewers=0, updated=0.0)
    monkeypatch.setattr(runs, "list_runs", lambda runs_dir: [raw])
    monkeypatch.setattr(runs, "check_runs_dir", lambda runs_dir: True)
    out = io.StringIO()
    run_runs(argparse.Namespace(runs_dir=tmp_path, json=False), out)
    table = out.getvalue()
    assert not controls(table.replace("\n", "")), repr(table)
    assert "evil␛[2J" in table and "finished␛]0;pwned␇" in table and f"c␛[31m{STAND_IN}orp" in table
    assert "␛]8;;http://x␇lstm" in table
    corpus = next(word for word in table.split() if word.startswith("c␛"))
    assert len(corpus) == CELL_WIDTH and corpus.endswith("\u2026")  # a long field is cut


@pytest.fixture(scope="module")
def escape_model(tmp_path_factory):
    """A run trained on terminal output: its samples are full of ESC."""
    from charrnn_tui.engine.run.trainer import Trainer

    folder = tmp_path_factory.mktemp("escapes")
    corpus = folder / "terminal.log"
    corpus.write_text("\x1b[1mbold\x1b[0m ok\n" * 120)
    Trainer(tiny_config(corpus, max_steps=40, eval_interval=40), runs_dir=folder / "runs", run_name="esc").run()
    return folder / "runs"


def sample_args(runs_dir, **more) -> argparse.Namespace:
    from charrnn_tui.engine.cli.main import parse

    args = parse(["sample", "esc", "--runs-dir", str(runs_dir), "-n", "300", "--seed", "0", "--temperature", "1.0",
                  "--device", "cpu"])
    return argparse.Namespace(**{**vars(args), **more})


def test_sample_shows_a_terminal_stand_ins_and_a_pipe_the_exact_text(escape_model):
    from charrnn_tui.engine.cli.main import run_sample

    pipe, terminal, exact = io.StringIO(), Terminal(), io.StringIO()
    run_sample(sample_args(escape_model), pipe)
    run_sample(sample_args(escape_model), terminal)
    run_sample(sample_args(escape_model, json=True), exact)
    import json

    text = json.loads(exact.getvalue())["text"]
    assert ESC in text  # the model did write escape sequences
    assert pipe.getvalue() == text + "\n"  # a pipe or a file: the model's text, byte for byte
    assert ESC not in terminal.getvalue() and "␛" in terminal.getvalue()
    assert terminal.getvalue() == printable(text) + "\n"


def test_the_progress_line_and_its_samples_are_printable():
    from charrnn_tui.engine.serve.printer import ProgressPrinter

    for out in (io.StringIO(), Terminal()):
        printer = ProgressPrinter(out)
        printer(ev.SampleFinished(1, f"line one{TITLE}\nline two\t{ESC}[2J"))
        printer(ev.Notice(f"corpus {ESC}[31mred", "warning"))
        printer(ev.StateChanged("stopped", f"because{ESC}[8m"))
        written = out.getvalue().replace("\r\x1b[2K", "")  # the printer's own "rewrite this line"
        assert ESC not in written and "\x07" not in written, repr(written)
        assert "line one␛]0;pwned␇\nline two\t␛[2J" in written and "because␛[8m" in written


def test_an_error_naming_a_file_with_escapes_is_one_printable_line(capsys):
    from charrnn_tui.engine.cli.main import report_errors

    def fails() -> int:
        raise CharRNNError(f"evil{TITLE}\nname.txt: cannot read")

    assert report_errors(fails) == 2
    err = capsys.readouterr().err
    assert err == "charrnn-tui: error: evil␛]0;pwned␇␊name.txt: cannot read\n"


# ---- the app ------------------------------------------------------------------------------------
def rendered(widget) -> str:
    """What the widget puts on the terminal, line by line."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


async def test_a_peers_prompt_is_shown_literally_without_its_escape_sequences():
    """Another client's prompt reaches every attached app in the run's events: it is shown as typed,
    brackets and all, never parsed as markup, and its escape sequences as stand-ins."""
    from charrnn_tui.tui.app import CharRNNApp
    from charrnn_tui.tui.widgets.samples_panel import SampleView

    prompt = f"{TITLE}[b]markup[/b] "
    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(100, 30)) as pilot:
        for event in (ev.StateChanged("training"),
                      ev.SampleStarted(7, 12, prompt, 0.8, "prompt", notes=(f"dropped {ESC}[5m",)),
                      ev.SampleText(7, f"more{ESC}[2J [i]x[/i]", (0.5,) * 14),
                      ev.SampleFinished(7, f"more{ESC}[2J [i]x[/i]", (0.5,) * 14),
                      ev.SampleStarted(8, 13, "", 0.8, "live"),
                      ev.SampleFinished(8, f"live{ESC}[31m [u]sample[/u]"),
                      ev.Notice(f"from the run{ESC}]0;x\x07 [b]!", "warning")):
            app.post_engine_event(event)
        await pilot.pause()
        app.redraw()
        await pilot.pause()
        shown = rendered(app.query_one("#prompt-output"))
        assert "␛]0;pwned␇[b]markup[/b] more␛[2J [i]x[/i]" in shown, shown
        assert "dropped ␛[5m" in shown
        live = rendered(app.query_one(SampleView))
        assert "live␛[31m [u]sample[/u]" in live, live
        toasts = [str(n.message) for n in app._notifications]
        assert any("from the run␛]0;x␇ [b]!" in t for t in toasts), toasts
        assert ESC not in shown + live + "".join(toasts)


def test_the_views_text_keeps_its_token_offsets():
    """The stand-ins are one character each: the confidence shading still covers the right tokens."""
    from charrnn_tui.tui.run_view import RunView
    from charrnn_tui.tui.sample_text import sample_body

    view = RunView()
    view.apply(ev.SampleStarted(1, 1, "", 1.0, "live"))
    sample = view.apply(ev.SampleFinished(1, f"ab{ESC}cd", (0.9, 0.9, 0.001, 0.9, 0.9)))
    body = sample_body(sample, confidence=True)
    assert body.plain == "ab␛cd"
    assert [(s.start, s.end, str(s.style)) for s in body.spans] == [
        (0, 2, "black on green"), (2, 3, "white on magenta"), (3, 5, "black on green")]
    assert isinstance(body, Text)
