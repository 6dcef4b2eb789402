"""bench/gpu_acceptance.sh, the run for the first GPU: valid bash, and on a machine without CUDA it runs
its CPU-safe parts (GPU_ACCEPTANCE_QUICK=1: about a second per timed part), says SKIP with the
reason for the CUDA-only checks, and leaves no process and no folder behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_acceptance.sh"
# Without CUDA: what holds on a CPU too passes; the rest is a CPU dry run of its code, then SKIP.
EXPECTED_WITHOUT_CUDA = {
    "cuda_tests": "SKIP", "step_dtypes_syncs": "SKIP", "step_speed": "SKIP", "time_to_loss": "SKIP",
    "sample_speed": "SKIP", "batch_size_auto": "PASS", "resume_equality": "PASS", "oom_recovery": "SKIP",
    "torchrun_ddp": "SKIP",
}
LINE = re.compile(r"^(PASS|FAIL|SKIP) (\w+): (.+)$")

pytestmark = [
    pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                       reason="needs bash and coreutils' timeout"),
    # a copy of the tests alone (mutation testing runs one) has no bench/ beside it
    pytest.mark.skipif(not SCRIPT.is_file(), reason=f"{SCRIPT} is not beside these tests"),
]


def run_script(tmp_path: Path, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GPU_ACCEPTANCE_")}
    environment.update(TMPDIR=str(tmp_path), PYTHON=sys.executable, PYTHONWARNINGS="ignore", **env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def recap(stdout: str) -> dict[str, tuple[str, str]]:
    """The result lines repeated after the '--- gpu_acceptance' line: check -> (status, detail)."""
    tail = stdout[stdout.index("--- gpu_acceptance"):]
    return {m[2]: (m[1], m[3]) for m in map(LINE.match, tail.splitlines()) if m}


def processes_of(tmp_path: Path) -> list[int]:
    """Processes still carrying the marker the script gives everything it starts."""
    marker = f"GPU_ACCEPTANCE_RUN={tmp_path}/".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if any(entry.startswith(marker) for entry in environ.read_bytes().split(b"\0")):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_the_script_is_valid_bash_and_lists_its_checks(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True).returncode == 0
    listed = run_script(tmp_path, "--list", timeout=60)
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(EXPECTED_WITHOUT_CUDA)
    unknown = run_script(tmp_path, "no_such_check", timeout=60)
    assert unknown.returncode == 2 and "no check named no_such_check" in unknown.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_spent_budget_skips_what_is_left_and_says_why(tmp_path):
    done = run_script(tmp_path, "step_speed", "oom_recovery", timeout=120, GPU_ACCEPTANCE_BUDGET="0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert recap(done.stdout) == {name: ("SKIP", "the 0 s budget was spent before it (GPU_ACCEPTANCE_BUDGET)")
                                  for name in ("step_speed", "oom_recovery")}
    assert list(tmp_path.iterdir()) == []


def test_a_check_out_of_time_fails_the_run_and_what_it_started_is_ended(tmp_path):
    # torchrun and its worker (in a session of its own), stopped by pid when the check's time is up
    done = run_script(tmp_path, "torchrun_ddp", timeout=120, GPU_ACCEPTANCE_LIMIT="14")  # 4 s for torchrun
    assert done.returncode == 1, done.stdout + done.stderr
    status, detail = recap(done.stdout)["torchrun_ddp"]
    assert status == "FAIL" and "timed out after" in detail
    assert "--- torchrun_ddp: the end of its log" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("summary: 0 passed, 1 failed, 0 skipped in ")
    assert list(tmp_path.iterdir()) == []
    assert processes_of(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, run bench/gpu_acceptance.sh itself: this test "
                                                      "checks its run without one")
def test_without_cuda_it_runs_the_cpu_parts_skips_the_rest_and_leaves_nothing_behind(tmp_path):
    done = run_script(tmp_path, GPU_ACCEPTANCE_QUICK="1")
    output = done.stdout + done.stderr
    results = recap(done.stdout)
    assert {name: status for name, (status, _) in results.items()} == EXPECTED_WITHOUT_CUDA, output
    for name, (status, detail) in results.items():
        if status == "SKIP":
            assert detail.startswith("no CUDA GPU (torch sees none): "), (name, detail)
    # Each line was printed as its check ended, then again after the '---' line, with the summary last.
    assert all(done.stdout.count(f" {name}: ") == 2 for name in results)
    assert done.stdout.rstrip().splitlines()[-1].startswith("summary: 2 passed, 0 failed, 7 skipped in ")
    assert done.returncode == 0, output
    # The dry runs did their part: dtypes as precision_by_part says, losses read back after a resume...
    assert "as precision_by_part says" in results["step_dtypes_syncs"][1]
    assert "bitwise equal" in results["resume_equality"][1]
    assert "CHARRNN_FORCE_DDP=1" in results["torchrun_ddp"][1]
    assert list(tmp_path.iterdir()) == [], "the script left files behind"
    assert processes_of(tmp_path) == [], "the script left processes running"
