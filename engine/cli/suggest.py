"""Answers to slips on the command line: "did you mean ...?" for commands, corpora and flags."""

from __future__ import annotations

import difflib
from pathlib import Path

# Words people type for a command that has another name here.
SYNONYMS = {
    "status": "runs", "stats": "runs", "list": "runs", "ls": "runs", "ps": "runs", "show": "runs",
    "kill": "stop", "end": "stop", "quit": "stop",
    "generate": "sample", "gen": "sample", "write": "sample", "complete": "sample",
    "evaluate": "eval", "score": "eval", "test": "eval", "perplexity": "eval",
    "watch": "attach", "view": "attach", "open": "attach", "tail": "attach",
    "fit": "train", "run": "train", "start": "train", "resume": "train --resume",
    "predict": "next",
    "diagnose": "doctor", "check": "doctor", "info": "doctor", "sysinfo": "doctor", "env": "doctor",
}


def closest(word: str, choices: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str | None:
    """The choice `word` was most likely meant to be, or None."""
    if word.lower() in SYNONYMS and SYNONYMS[word.lower()].split()[0] in choices:
        return SYNONYMS[word.lower()]
    found = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=cutoff)
    return found[0] if found else None


def looks_like_path(word: str) -> bool:
    """Whether a word was meant as a file or folder rather than a command or a bundled corpus."""
    return "/" in word or word.startswith(("~", ".")) or bool(Path(word).suffix)


def unknown_first_word(word: str, commands: tuple[str, ...], bundled: list[str],
                       what: str = "command or corpus") -> str:
    """The one line for a word that is no command, no bundled corpus and no file or folder."""
    if looks_like_path(word):
        guess = nearby_file(word)
        hint = f"; did you mean {guess}?" if guess else ""
        return f"{word}: no such file or folder{hint}"
    guess = closest(word, [*commands, *bundled])
    if guess:
        return f"unknown {what} {word!r}; did you mean {guess!r}?"
    known = (f"commands are {', '.join(commands)}; " if commands else "") + f"bundled corpora {', '.join(bundled)}"
    return f"unknown {what} {word!r}: {known}; or give a text file or folder"


def nearby_file(word: str) -> str | None:
    """A file or folder beside where `word` points whose name is close to it (a typo in a path)."""
    path = Path(word).expanduser()
    folder = path.parent
    try:
        names = [p.name for p in folder.iterdir()][:10_000] if folder.is_dir() else []
    except OSError:
        return None
    found = difflib.get_close_matches(path.name, names, n=1, cutoff=0.75)
    if not found:
        return None
    return found[0] if str(folder) == "." and not word.startswith("./") else str(Path(word).with_name(found[0]))


def unknown_option(option: str, known: list[str]) -> str:
    """`--temprature` -> "unknown option --temprature; did you mean --temperature?"."""
    flag = option.split("=", 1)[0]
    if not flag.startswith("-"):
        return f"unexpected argument {option!r}"
    found = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    return f"unknown option {flag}" + (f"; did you mean {found[0]}?" if found else "")
