"""Mutation testing of the engine's core modules with mutmut 3.8.1; prints the score per module.

    python bench/mutation.py                              # every mutant of every module (hours on 2 cores)
    python bench/mutation.py --modules vocab data         # some groups (below)
    python bench/mutation.py --sample 100                 # at most 100 mutants per group, a seeded random sample
    python bench/mutation.py --report-only                # tally what is already in mutants/, run nothing

Groups, the engine's core that issue 11 asked to measure: sampling, data (batching), evaluate, checkpoint,
vocab, model, step (the training step: engine/step.py) as whole files; trainer.step (Trainer._train_step,
_report, _flush_progress: the loop's side of a step) and run_setup.checkpoints (saving and restoring a run:
RunSetup._save, _save_final, _checkpoint_payload, _restore, _restore_position, _same_batch_shape, ...).
`--modules trainer.rest run_setup.rest` adds the rest of those two files, which is out of that scope.
Configuration is [tool.mutmut] in pyproject.toml; run with the project's venv python.

Results are kept in mutants/ (mutmut's own cache): a run that is interrupted or sampled picks up where the
last one stopped, and only mutants never checked are run again (--rerun tests the selected ones anew, --fresh
deletes mutants/ first). Surviving mutants' names go to --survivors (`mutmut show NAME` prints the diff).
Stop a run with Ctrl-C or by SIGTERM to the `mutmut run` process; finished mutants keep their results.

Don't run `mutmut print-time-estimates`: in 3.8.1 it empties the test map in mutants/mutmut-stats.json, and every
later run then counts each mutant as "no tests" (delete mutants/mutmut-stats.json to recover).

Why src/charrnn_tui/engine: mutmut names a mutant after its file's path ("src/" stripped) and a mutated function
only switches to the mutant when that name matches its __module__. engine/ is installed as charrnn_tui.engine
(package-dir), so mutmut is pointed at the symlink src/charrnn_tui/engine -> ../../engine; the mutated copies
land in mutants/src/charrnn_tui/engine/ and, with mutants/src first on sys.path, `import charrnn_tui.engine`
in the tests finds them before the editable install's finder does.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "charrnn_tui.engine"
FILES = ["sampling", "data", "evaluate", "checkpoint", "vocab", "model", "step"]
# Methods of the two split files that are in scope; the rest of each file is its ".rest" group.
IN_SCOPE = {
    "trainer": ("trainer.step", {"_train_step", "_report", "_flush_progress"}),
    "run_setup": ("run_setup.checkpoints", {"_save", "_save_final", "_checkpoint_payload", "_restore",
                                            "_restore_position", "_same_batch_shape", "_last_good_checkpoint",
                                            "_save_after_out_of_memory", "_fail_unsaved", "resumed_config"}),
}
MODULES = [*FILES, *(group for group, _ in IN_SCOPE.values())]  # what runs by default
GROUPS = [*MODULES, "trainer.rest", "run_setup.rest"]
SHIM = ROOT / "src" / "charrnn_tui" / "engine"

# mutmut has no command that only generates the mutants; these are the steps `mutmut run` starts with (3.8.1).
# A function whose source is unchanged keeps its cached result.
GENERATE = """
import mutmut.__main__ as m
m.makedirs("mutants", exist_ok=True)
m.copy_src_dir()
m.copy_also_copy_files()
m.create_mutants({children})
"""


def group_of(name: str) -> str:
    """charrnn_tui.engine.trainer.xǁTrainerǁ_report__mutmut_3 -> trainer.step"""
    module, _, function = name.partition("__mutmut_")[0].rpartition(".")
    module = module.removeprefix(PACKAGE + ".")
    if module not in IN_SCOPE:
        return module
    method = function.rsplit("ǁ", 1)[1] if "ǁ" in function else function[2:]
    group, methods = IN_SCOPE[module]
    return group if method in methods else f"{module}.rest"


# What belongs in mutants/, the tests' working directory during a run; anything else was written there by a test
# under some mutant (e.g. test_checkpoints' exploit, which touches ./pwned once weights_only is mutated away) and
# fails that test for every later mutant, a kill that isn't one.
OWN_FILES = {"src", "tests", "pyproject.toml", "mutmut-stats.json", "mutmut-debug.log", "mutmut-cicd-stats.json",
             ".forkserver-crash.log"}


def strays(log: Path, survivors: Path) -> list[Path]:
    folder = ROOT / "mutants"
    own = OWN_FILES | {log.name, survivors.name}
    return sorted(p for p in folder.iterdir() if p.name not in own) if folder.is_dir() else []


def killed_after(moment: str) -> list[str]:
    """Mutants killed by a test run that started at `moment` (as in mutants/mutmut-debug.log) or later."""
    started: dict[str, str] = {}
    killed = []
    for line in (ROOT / "mutants" / "mutmut-debug.log").read_text().splitlines():
        stamp, _, rest = line.partition(" [")
        if m := re.search(r"Received mutant: (\S+)", rest):
            started[m.group(1)] = stamp
        elif (m := re.search(r"Completed (\S+): exit=1 ", rest)) and started.get(m.group(1), "") >= moment:
            killed.append(m.group(1))
    return killed


def load_results() -> dict[str, int | None]:
    """Every mutant mutmut generated -> its exit code (None: not checked yet)."""
    results: dict[str, int | None] = {}
    for meta in sorted((ROOT / "mutants" / "src").rglob("*.py.meta")):
        results.update(json.loads(meta.read_text())["exit_code_by_key"])
    return results


def mutmut_executable() -> str:
    # `mutmut run`, not `python -m mutmut run`: the module form re-executes mutmut.__main__ (mutmut warns about it)
    exe = Path(sys.executable).with_name("mutmut")
    return str(exe) if exe.exists() else (shutil.which("mutmut") or "mutmut")


def select(
    results: dict[str, int | None], groups: list[str], sample: dict[str, int], seed: int
) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for group in groups:
        names = sorted(n for n in results if group_of(n) == group)
        n = sample.get(group, sample.get("*", 0))
        if n and n < len(names):
            # seeded by group, so a group's sample is the same whatever else is run, and independent of results
            names = sorted(random.Random(f"{seed}:{group}").sample(names, n))
        chosen[group] = names
    return chosen


def report(results: dict[str, int | None], chosen: dict[str, list[str]], survivors: Path) -> None:
    from mutmut.stats import status_by_exit_code

    columns = ["killed", "survived", "timeout", "no tests", "suspicious", "segfault", "not checked"]
    header = f"{'group':<14}" + "".join(f"{c:>12}" for c in columns) + f"{'total':>8}{'killed %':>10}{'k+t %':>8}"
    print(header)
    print("-" * len(header))
    totals: Counter[str] = Counter()
    lines = []
    for group, names in chosen.items():
        counts = Counter(status_by_exit_code[results[n]] for n in names)
        totals.update(counts)
        lines.append((group, counts, len(names), sum(1 for n in results if group_of(n) == group)))
    lines.append(("all", totals, sum(len(v) for v in chosen.values()), len(results)))
    for group, counts, n, generated in lines:
        checked = n - counts["not checked"]
        pct = f"{100 * counts['killed'] / checked:.1f}" if checked else "-"
        pct_t = f"{100 * (counts['killed'] + counts['timeout']) / checked:.1f}" if checked else "-"
        note = f"   (sample of {generated})" if n < generated and group != "all" else ""
        print(f"{group:<14}" + "".join(f"{counts[c]:>12}" for c in columns) + f"{n:>8}{pct:>10}{pct_t:>8}{note}")
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
    ap.add_argument("--modules", nargs="+", default=MODULES, metavar="M",
                    help=f"any of {', '.join(GROUPS)} (default: {' '.join(MODULES)})")
    ap.add_argument("--sample", nargs="+", default=[], metavar="[GROUP=]N",
                    help="test at most N mutants per group (or of GROUP), a seeded random sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--rerun", action="store_true", help="test the selected mutants again even if checked")
    ap.add_argument("--rerun-survivors", action="store_true",
                    help="test the selected mutants that survived again (after adding tests)")
    ap.add_argument("--fresh", action="store_true", help="delete mutants/ (all cached results) first")
    ap.add_argument("--report-only", action="store_true", help="run nothing, tally the cached results")
    ap.add_argument("--rerun-killed-after", metavar="'YYYY-MM-DD HH:MM:SS'",
                    help="also test again the mutants killed by a run that started then or later (see the warning "
                         "about files left in mutants/)")
    ap.add_argument("--survivors", type=Path, default=ROOT / "mutants" / "survivors.txt")
    ap.add_argument("--log", type=Path, default=ROOT / "mutants" / "mutmut-run.log", help="mutmut's output")
    args = ap.parse_args()

    groups: list[str] = []
    for m in args.modules:
        wanted = [m]
        for g in wanted:
            if g not in GROUPS:
                ap.error(f"unknown module {m!r}; choose from {', '.join(GROUPS)}")
            if g not in groups:
                groups.append(g)

    sample: dict[str, int] = {}
    for item in args.sample:
        group, _, n = item.rpartition("=")
        if group and group not in GROUPS or not n.isdigit():
            ap.error(f"--sample takes N or GROUP=N, GROUP one of {', '.join(GROUPS)}; got {item!r}")
        sample[group or "*"] = int(n)

    if not SHIM.is_dir():
        sys.exit(f"{SHIM.relative_to(ROOT)} is missing: it must be a symlink to ../../engine (see this file's doc)")
    if args.fresh and not args.report_only:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)

    start = time.monotonic()
    if not args.report_only:
        subprocess.run([sys.executable, "-c", GENERATE.format(children=args.max_children)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    results = load_results()
    if not results:
        sys.exit("no mutants found under mutants/: run without --report-only first")
    chosen = select(results, groups, sample, args.seed)

    if not args.report_only:
        for stray in strays(args.log, args.survivors):
            print(f"removing {stray.relative_to(ROOT)}: a test under some mutant left it there")
            shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
        from mutmut.stats import status_by_exit_code

        again = ("survived", "no tests", "suspicious") if args.rerun_survivors else ()
        todo = [n for names in chosen.values() for n in names
                if args.rerun or results[n] is None or status_by_exit_code[results[n]] in again]
        if args.rerun_killed_after:
            todo += [n for n in killed_after(args.rerun_killed_after) if n in results and n not in todo]
        print(f"{sum(len(v) for v in chosen.values())} mutants selected, {len(todo)} to test; "
              f"mutmut's output goes to {args.log}", flush=True)
        if todo:
            args.log.parent.mkdir(parents=True, exist_ok=True)
            with args.log.open("a") as log:
                code = subprocess.run([mutmut_executable(), "run", "--max-children", str(args.max_children), *todo],
                                      cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
            if code != 0:
                print(f"mutmut run exited with {code}; see {args.log}", file=sys.stderr)
            results = load_results()
        print(f"took {time.monotonic() - start:.0f} s")
        left = strays(args.log, args.survivors)
        if left:
            first = min(p.stat().st_mtime for p in left)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first))
            print(f"WARNING: tests left {', '.join(p.name for p in left)} in mutants/ (first at {when}); a mutant "
                  f"whose tests ran after that may count as killed because of it. Rerun those:\n"
                  f"    python bench/mutation.py {' '.join(sys.argv[1:])} --rerun-killed-after '{when}'\n"
                  f"(a mutant already running at that moment may be the one that wrote it: check it by hand)",
                  file=sys.stderr)

    report(results, chosen, args.survivors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
