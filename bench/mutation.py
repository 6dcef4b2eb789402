"""Mutation testing with mutmut 3.8.1: a test suite's worth of one-line bugs, and the share the tests catch.

    python bench/mutation.py                               # the engine's core (suite "core"; hours on 2 cores)
    python bench/mutation.py --suite logic                 # the rest of the pure logic, engine and app (suite "logic")
    python bench/mutation.py --suite logic --modules schedule tui.chart   # some groups of a suite
    python bench/mutation.py --sample 100                  # at most 100 mutants per group, a seeded random sample
    python bench/mutation.py --suite logic --report-only   # tally what is already in mutants/logic/, run nothing

Suites (each group is a file, or the named functions of a file; `--modules` lists them all):
- core, what issue 11 asked to measure: sampling, data (batching), evaluate, checkpoint, vocab, model, step (the
  training step), checkpoints (a run's checkpoint and its restoring), saving (writing one while training, and the
  messages when that fails), reporting (the losses read back, the NaN check, the speed and ETA) as whole files;
  trainer.step (Trainer.step, _report, _flush_progress, and the saves and the recovery from running out of
  memory: the loop's side of a step and of a checkpoint).
  trainer.rest, the rest of the loop, is a group that only runs when named.
- logic, what issue 25 asked to measure, the modules that are pure logic: schedule, history, overfitting, novelty,
  protocol, control (the request queue and budget), runs (run folders and the listing), durations (times as
  shown), run_state (the one fold of a run's events, which the server, the client and the app keep),
  server.logic (what the server welcomes with, coalesces, rate-limits and answers: RunRecord, _sample_events,
  _RateLimit, RunServer.handle_event, _coalesced, apply_request, _Client._greet and _handle; not its sockets and
  threads), client.logic (what the client makes of
  what it reads: status, _event_or_none, _not_live_message), and the app's logic:
  tui.chart, tui.run_view, tui.compared_runs, tui.sample_text, tui.formatting, tui.engine_inbox. The widgets and
  the App are screens, tested by the pilot, snapshot and tmux tests, not here.

Each suite is tested by its own selection of test files (SUITES below), run in its own folder, mutants/SUITE/,
holding a pyproject.toml written from the project's with the suite's [tool.mutmut] section, and links to src/
and tests/. Results are kept in mutants/SUITE/mutants/ (mutmut's own cache): a run that is interrupted or sampled
picks up where the last one stopped, and only mutants never checked are run again (--rerun tests the selected ones
anew, --rerun-survivors the ones that survived, --fresh deletes the suite's folder first). Surviving mutants'
names go to mutants/SUITE/survivors.txt (`cd mutants/SUITE && mutmut show NAME` prints the diff). Stop a run with
Ctrl-C or by SIGTERM to the `mutmut run` process; finished mutants keep their results.

Don't run `mutmut print-time-estimates`: in 3.8.1 it empties the test map in mutmut-stats.json, and every later
run then counts each mutant as "no tests" (delete mutants/SUITE/mutants/mutmut-stats.json to recover).

Why src/charrnn_tui/engine and src/charrnn_tui/tui: mutmut names a mutant after its file's path ("src/" stripped)
and a mutated function only switches to the mutant when that name matches its __module__. engine/ and tui/ are
installed as charrnn_tui.engine and charrnn_tui.tui (package-dir), so mutmut is pointed at the symlinks
src/charrnn_tui/engine -> ../../engine and src/charrnn_tui/tui -> ../../tui; the mutated copies land in
mutants/SUITE/mutants/src/charrnn_tui/, and, with that src first on sys.path, `import charrnn_tui.engine` in the
tests finds them before the editable install's finder does (charrnn_tui has no __init__.py: a namespace package).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIMS = [ROOT / "src" / "charrnn_tui" / "engine", ROOT / "src" / "charrnn_tui" / "tui"]


@dataclass(frozen=True)
class Suite:
    files: list[str]  # under src/charrnn_tui/, e.g. "engine/model/step.py"
    tests: list[str]  # pytest's selection (files, --ignore options)
    # File (as a module name below charrnn_tui, e.g. "engine.trainer") -> (group, what belongs to it): "f" a
    # function, "C.m" a method, "C.*" a whole class. The rest of such a file is its ".rest" group.
    scopes: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    default_groups: list[str] | None = None  # None: every group but the .rest ones

    def groups(self) -> list[str]:
        groups = []
        for file in self.files:
            module = file.removesuffix(".py").replace("/", ".")
            if module in self.scopes:
                groups += [self.scopes[module][0], group_name(module) + ".rest"]
            else:
                groups.append(group_name(module))
        return groups

    def defaults(self) -> list[str]:
        return self.default_groups or [g for g in self.groups() if not g.endswith(".rest")]


def group_name(module: str) -> str:
    """engine.model.step -> step, tui.chart -> tui.chart: the engine's files by their own name (whatever their
    layer's package), the app's with tui."""
    return module.rpartition(".")[2] if module.startswith("engine.") else module


def engine_file(name: str) -> str:
    """step -> engine/model/step.py: an engine module's file, by its name (each is unique)."""
    found = [p for p in (ROOT / "engine").rglob(f"{name}.py")]
    assert len(found) == 1, f"engine module {name}: {found}"
    return found[0].relative_to(ROOT).as_posix()


SUITES = {
    "core": Suite(
        files=[engine_file(m) for m in
               ("sampling", "data", "evaluate", "checkpoint", "vocab", "model", "step", "trainer", "checkpoints",
                "saving", "reporting")],
        # The engine's own tests only: the test_tui_* files start a Textual UI and are slow, and the run-server
        # tests (a run in a thread, driven over its socket or by a subprocess) hang under mutmut's call tracing.
        tests=["tests", "--ignore-glob=tests/test_tui_*.py", "--ignore=tests/test_server.py",
               "--ignore=tests/test_runs_cli.py", "--ignore=tests/test_threads.py"],
        scopes={
            "engine.run.trainer": ("trainer.step", {
                "Trainer.step", "Trainer._report", "Trainer._flush_progress", "Trainer._save",
                "Trainer._save_final", "Trainer._recover_from_out_of_memory", "Trainer._fail_unsaved"}),
        },
    ),
    "logic": Suite(
        files=[*(engine_file(m) for m in ("schedule", "history", "overfitting", "novelty", "protocol", "control",
                                          "runs", "durations", "run_state", "server", "client")),
               *(f"tui/{m}.py" for m in ("chart", "run_view", "compared_runs", "sample_text", "formatting",
                                         "engine_inbox"))],
        # Every test file but the slow end-to-end ones (training runs, the app in tmux, the CLI in subprocesses):
        # by exclusion, so that a test file added later joins without changing the selection (a change of
        # selection resets every cached result).
        tests=["tests", *(f"--ignore=tests/test_{name}.py" for name in (
            "bad_input", "checkpoints", "cli", "corpus", "cuda", "data", "distributed", "faults", "memory",
            "model_and_eval", "resuming", "runs_cli", "sampling", "threads", "training_step", "vocab",
            "textual_caches", "tui_pilot", "tui_snapshots", "tui_terminal"))],
        scopes={
            "engine.serve.server": ("server.logic", {
                "RunRecord.*", "_sample_events", "_RateLimit.*", "RunServer.handle_event", "RunServer._coalesced",
                "RunServer.apply_request", "_Client._greet", "_Client._handle"}),
            "engine.serve.client": ("client.logic", {
                "EngineClient.status", "EngineClient._not_live_message", "_event_or_none"}),
        },
    ),
}

# mutmut has no command that only generates the mutants; these are the steps `mutmut run` starts with (3.8.1).
# A function whose source is unchanged keeps its cached result.
GENERATE = """
import mutmut.__main__ as m
m.makedirs("mutants", exist_ok=True)
m.copy_src_dir()
m.copy_also_copy_files()
m.create_mutants({children})
"""


def mutmut_config(suite: Suite) -> str:
    def toml_list(items: list[str]) -> str:
        return "[\n" + "".join(f"    {json.dumps(i)},\n" for i in items) + "]"

    # a test file to run that is not there would fail the whole run
    tests = [t for t in suite.tests if t.startswith("-") or not t.endswith(".py") or (ROOT / t).exists()]
    return "\n".join([
        "[tool.mutmut]",
        'source_paths = ["src/charrnn_tui/engine", "src/charrnn_tui/tui"]',
        f"only_mutate = {toml_list([f'src/charrnn_tui/{f}' for f in suite.files])}",
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        "# torch is not fork-safe once it has run: fork the mutant workers from a server that has only collected",
        'process_isolation = "forkserver"',
        "# each worker's exit code and time, in mutants/mutmut-debug.log (says why a mutant counts as a timeout)",
        "log_to_file = true",
        "",
    ])


def prepare(workspace: Path, suite: Suite) -> None:
    """mutants/SUITE/: the project's pyproject.toml with this suite's [tool.mutmut], and links to src/ and tests/."""
    workspace.mkdir(parents=True, exist_ok=True)
    project = (ROOT / "pyproject.toml").read_text()
    project = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", project)
    (workspace / "pyproject.toml").write_text(project.rstrip() + "\n\n" + mutmut_config(suite))
    for name in ("src", "tests"):
        link = workspace / name
        if not link.is_symlink():
            os.symlink(ROOT / name, link)
    # mutmut copies the source once and regenerates only the files it mutates: bring the others up to date,
    # or the tests of a later run would meet the code of the first one.
    mutated = {f"charrnn_tui/{f}" for f in suite.files}
    for shim in SHIMS:
        copy_root = workspace / "mutants" / "src" / "charrnn_tui" / shim.name
        for source in shim.resolve().rglob("*"):
            relative = source.relative_to(shim.resolve())
            copy = copy_root / relative
            own = f"charrnn_tui/{shim.name}/{relative}"
            if not source.is_file() or "__pycache__" in relative.parts or own in mutated or not copy_root.is_dir():
                continue
            if not copy.exists() or copy.read_bytes() != source.read_bytes():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy)


def group_of(name: str, suite: Suite) -> str:
    """charrnn_tui.engine.run.trainer.xǁTrainerǁ_report__mutmut_3 -> trainer.step;
    charrnn_tui.tui.chart.x_plot__mutmut_1 -> tui.chart"""
    module, _, function = name.partition("__mutmut_")[0].rpartition(".")
    module = module.removeprefix("charrnn_tui.")
    if module not in suite.scopes:
        return group_name(module)
    if "ǁ" in function:  # xǁClassǁmethod
        _, cls, method = function.split("ǁ")
        names = {f"{cls}.{method}", f"{cls}.*"}
    else:  # x_function
        names = {function[2:]}
    group, scope = suite.scopes[module]
    return group if names & scope else group_name(module) + ".rest"


# What belongs in mutants/, the tests' working directory during a run; anything else was written there by a test
# under some mutant (e.g. test_checkpoints' exploit, which touches ./pwned once weights_only is mutated away) and
# fails that test for every later mutant, a kill that isn't one.
OWN_FILES = {"src", "tests", "pyproject.toml", "mutmut-stats.json", "mutmut-debug.log", "mutmut-cicd-stats.json",
             ".forkserver-crash.log", ".hypothesis"}


def strays(folder: Path, log: Path, survivors: Path) -> list[Path]:
    own = OWN_FILES | {log.name, survivors.name}
    return sorted(p for p in folder.iterdir() if p.name not in own) if folder.is_dir() else []


def killed_after(folder: Path, moment: str) -> list[str]:
    """Mutants killed by a test run that started at `moment` (as in mutants/mutmut-debug.log) or later."""
    started: dict[str, str] = {}
    killed = []
    for line in (folder / "mutmut-debug.log").read_text().splitlines():
        stamp, _, rest = line.partition(" [")
        if m := re.search(r"Received mutant: (\S+)", rest):
            started[m.group(1)] = stamp
        elif (m := re.search(r"Completed (\S+): exit=1 ", rest)) and started.get(m.group(1), "") >= moment:
            killed.append(m.group(1))
    return killed


def load_results(folder: Path) -> dict[str, int | None]:
    """Every mutant mutmut generated -> its exit code (None: not checked yet)."""
    results: dict[str, int | None] = {}
    for meta in sorted((folder / "src").rglob("*.py.meta")):
        results.update(json.loads(meta.read_text())["exit_code_by_key"])
    return results


def mutmut_executable() -> str:
    # `mutmut run`, not `python -m mutmut run`: the module form re-executes mutmut.__main__ (mutmut warns about it)
    exe = Path(sys.executable).with_name("mutmut")
    return str(exe) if exe.exists() else (shutil.which("mutmut") or "mutmut")


def select(
    results: dict[str, int | None], suite: Suite, groups: list[str], sample: dict[str, int], seed: int
) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for group in groups:
        names = sorted(n for n in results if group_of(n, suite) == group)
        n = sample.get(group, sample.get("*", 0))
        if n and n < len(names):
            # seeded by group, so a group's sample is the same whatever else is run, and independent of results
            names = sorted(random.Random(f"{seed}:{group}").sample(names, n))
        chosen[group] = names
    return chosen


def report(results: dict[str, int | None], suite: Suite, chosen: dict[str, list[str]], survivors: Path) -> None:
    from mutmut.stats import status_by_exit_code

    columns = ["killed", "survived", "timeout", "no tests", "suspicious", "segfault", "not checked"]
    header = f"{'group':<22}" + "".join(f"{c:>12}" for c in columns) + f"{'total':>8}{'killed %':>10}{'k+t %':>8}"
    print(header)
    print("-" * len(header))
    totals: Counter[str] = Counter()
    lines = []
    for group, names in chosen.items():
        counts = Counter(status_by_exit_code[results[n]] for n in names)
        totals.update(counts)
        lines.append((group, counts, len(names), sum(1 for n in results if group_of(n, suite) == group)))
    lines.append(("all", totals, sum(len(v) for v in chosen.values()), len(results)))
    for group, counts, n, generated in lines:
        checked = n - counts["not checked"]
        pct = f"{100 * counts['killed'] / checked:.1f}" if checked else "-"
        pct_t = f"{100 * (counts['killed'] + counts['timeout']) / checked:.1f}" if checked else "-"
        note = f"   (sample of {generated})" if n < generated and group != "all" else ""
        print(f"{group:<22}" + "".join(f"{counts[c]:>12}" for c in columns) + f"{n:>8}{pct:>10}{pct_t:>8}{note}")
    print("killed % = killed / checked; k+t % also counts timeouts as killed (as mutmut's badge does)")

    survivors.parent.mkdir(parents=True, exist_ok=True)
    with survivors.open("w") as f:
        for group, names in chosen.items():
            kept = [n for n in names if status_by_exit_code[results[n]] in ("survived", "no tests", "suspicious")]
            f.write(f"# {group}: {len(kept)} not killed (survived, no tests or suspicious)\n")
            for n in kept:
                f.write(f"{n}\t{status_by_exit_code[results[n]]}\n")
    print(f"surviving mutants: {survivors.relative_to(ROOT) if survivors.is_relative_to(ROOT) else survivors}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), default="core", help="which modules and tests (default: core)")
    ap.add_argument("--modules", nargs="+", metavar="M",
                    help="groups of the suite (default: all but the .rest ones); "
                         + "; ".join(f"{name}: {' '.join(s.groups())}" for name, s in SUITES.items()))
    ap.add_argument("--sample", nargs="+", default=[], metavar="[GROUP=]N",
                    help="test at most N mutants per group (or of GROUP), a seeded random sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--rerun", action="store_true", help="test the selected mutants again even if checked")
    ap.add_argument("--rerun-survivors", action="store_true",
                    help="test the selected mutants that survived again (after adding tests)")
    ap.add_argument("--fresh", action="store_true", help="delete mutants/SUITE/ (all cached results) first")
    ap.add_argument("--report-only", action="store_true", help="run nothing, tally the cached results")
    ap.add_argument("--rerun-killed-after", metavar="'YYYY-MM-DD HH:MM:SS'",
                    help="also test again the mutants killed by a run that started then or later (see the warning "
                         "about files left in mutants/)")
    ap.add_argument("--survivors", type=Path, help="where to list the mutants not killed (mutants/SUITE/survivors.txt)")
    ap.add_argument("--log", type=Path, help="mutmut's output (mutants/SUITE/mutmut-run.log)")
    args = ap.parse_args()

    suite = SUITES[args.suite]
    workspace = ROOT / "mutants" / args.suite
    folder = workspace / "mutants"  # mutmut's own
    survivors = args.survivors or workspace / "survivors.txt"
    log = args.log or workspace / "mutmut-run.log"
    groups: list[str] = []
    for g in args.modules or suite.defaults():
        if g not in suite.groups():
            ap.error(f"unknown module {g!r} in suite {args.suite}; choose from {', '.join(suite.groups())}")
        if g not in groups:
            groups.append(g)

    sample: dict[str, int] = {}
    for item in args.sample:
        group, _, n = item.rpartition("=")
        if group and group not in suite.groups() or not n.isdigit():
            ap.error(f"--sample takes N or GROUP=N, GROUP one of {', '.join(suite.groups())}; got {item!r}")
        sample[group or "*"] = int(n)

    for shim in SHIMS:
        if not shim.is_dir():
            sys.exit(f"{shim.relative_to(ROOT)} is missing: it must be a symlink to ../../{shim.name} "
                     "(see this file's doc)")
    if args.fresh and not args.report_only:
        shutil.rmtree(workspace, ignore_errors=True)

    start = time.monotonic()
    if not args.report_only:
        prepare(workspace, suite)
        subprocess.run([sys.executable, "-c", GENERATE.format(children=args.max_children)], cwd=workspace,
                       check=True, stdout=subprocess.DEVNULL)
    results = load_results(folder)
    if not results:
        sys.exit(f"no mutants found under {folder.relative_to(ROOT)}: run without --report-only first")
    chosen = select(results, suite, groups, sample, args.seed)

    if not args.report_only:
        for stray in strays(folder, log, survivors):
            print(f"removing {stray.relative_to(ROOT)}: a test under some mutant left it there")
            shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
        from mutmut.stats import status_by_exit_code

        again = ("survived", "no tests", "suspicious") if args.rerun_survivors else ()
        todo = [n for names in chosen.values() for n in names
                if args.rerun or results[n] is None or status_by_exit_code[results[n]] in again]
        if args.rerun_killed_after:
            todo += [n for n in killed_after(folder, args.rerun_killed_after) if n in results and n not in todo]
        print(f"{sum(len(v) for v in chosen.values())} mutants selected, {len(todo)} to test; "
              f"mutmut's output goes to {log}", flush=True)
        if todo:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as out:
                code = subprocess.run([mutmut_executable(), "run", "--max-children", str(args.max_children), *todo],
                                      cwd=workspace, stdout=out, stderr=subprocess.STDOUT).returncode
            if code != 0:
                print(f"mutmut run exited with {code}; see {log}", file=sys.stderr)
            results = load_results(folder)
        print(f"took {time.monotonic() - start:.0f} s")
        left = strays(folder, log, survivors)
        if left:
            first = min(p.stat().st_mtime for p in left)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first))
            print(f"WARNING: tests left {', '.join(p.name for p in left)} in {folder.relative_to(ROOT)} (first at "
                  f"{when}); a mutant whose tests ran after that may count as killed because of it. Rerun those:\n"
                  f"    python bench/mutation.py {' '.join(sys.argv[1:])} --rerun-killed-after '{when}'\n"
                  f"(a mutant already running at that moment may be the one that wrote it: check it by hand)",
                  file=sys.stderr)

    report(results, suite, chosen, survivors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
