"""`charrnn-tui doctor` (issue 26, item 6): every field present and of its type, the probe's speeds
finite and above zero, nothing written, valid JSON; and `charrnn-tui --version`.

No assertion on how fast anything is: the probe's figures depend on the machine and its load."""

from __future__ import annotations

import copy
import importlib.machinery
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import cli_command, run_cli

from charrnn_tui.engine.cli import doctor
from charrnn_tui.tui.cli import main

PROBE = 0.5  # seconds: set-up already takes longer, so each thread count gets one timed step

Nullable = (type(None),)
# Group -> field -> the types its value may have (JSON's: no tuples, no NaN). The key sets must match
# exactly: a field dropped, renamed or added unannounced fails here.
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "versions": {"charrnn_tui": (str,), "python": (str,), "torch": (str,), "torch_cuda": (str, *Nullable),
                 "cudnn": (str, *Nullable), "textual": (str,), "rich": (str,)},
    "system": {"os": (str,), "machine": (str,)},
    "device": {"type": (str,), "name": (str,), "count": (int, *Nullable), "capability": (str, *Nullable),
               "memory_of": (str,), "memory_total_bytes": (int,), "memory_free_bytes": (int,),
               "bf16_supported": (bool,)},
    "precision": {"setting": (str,), "bf16": (bool,), "parts": (dict,)},
    "cpu": {"torch_threads": (int,), "interop_threads": (int,), "logical_cpus": (int,), "usable_cpus": (int,),
            "native_bf16": (bool,)},
    "nvml": {"installed": (bool,), "working": (bool,), "detail": (str,)},
    "probe": {"seconds": (float, int), "corpus": (str,), "corpus_chars": (int,), "preset": (str,), "model": (str,),
              "parameters": (int,), "batch_size": (int,), "seq_len": (int,), "auto_batch_size": (bool,),
              "precision": (str,), "threads": (int, *Nullable), "tokens_per_s_by_threads": (dict, *Nullable),
              "train_steps": (int,), "train_tokens_per_s": (float,), "loss_first": (float,), "loss_last": (float,),
              "sample_chars": (int,), "sample_chars_per_s": (float,), "peak_memory_bytes": (int,),
              "peak_memory_of": (str,), "elapsed_s": (float,)},
}


def check_report(report: dict) -> None:
    assert set(report) == set(SCHEMA)
    for group, fields in SCHEMA.items():
        assert set(report[group]) == set(fields), group
        for key, types_ in fields.items():
            value = report[group][key]
            assert isinstance(value, types_), (group, key, value)
            assert not isinstance(value, bool) or bool in types_, (group, key, value)  # True is an int too
            assert not isinstance(value, float) or math.isfinite(value), (group, key, value)
    assert report["versions"]["charrnn_tui"] == doctor.package_version()
    assert report["versions"]["torch"] == torch.__version__
    device = report["device"]
    assert device["type"] == "cpu" and device["name"].startswith("CPU")  # this machine has no GPU
    assert 0 < device["memory_free_bytes"] <= device["memory_total_bytes"]
    parts = report["precision"]["parts"]
    assert parts and all(isinstance(k, str) and isinstance(v, str) and v for k, v in parts.items())
    assert {"recurrent layers", "head", "loss"} <= set(parts)
    cpu = report["cpu"]
    assert cpu["torch_threads"] >= 1 and 1 <= cpu["usable_cpus"] <= cpu["logical_cpus"]
    assert report["nvml"]["detail"]
    probe = report["probe"]
    assert probe["corpus"] == "shakespeare" and probe["corpus_chars"] > 1_000_000  # the default corpus
    assert probe["preset"] == "small"  # the default on a CPU
    assert probe["train_tokens_per_s"] > 0 and probe["sample_chars_per_s"] > 0
    assert probe["train_steps"] >= 1 and probe["sample_chars"] > 0 and probe["parameters"] > 0
    rates = probe["tokens_per_s_by_threads"]  # on a CPU: each count timed, the fastest kept
    assert rates and all(math.isfinite(r) and r > 0 for r in rates.values())
    assert str(probe["threads"]) in rates and probe["train_tokens_per_s"] == max(rates.values())
    assert 0 < probe["loss_last"] < 10 and 0 < probe["loss_first"] < 10


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One in-process report (the probe is the slow part), run from an empty folder with an empty
    user data dir: both must still be empty afterwards, and torch's threads and random state as they were."""
    home = tmp_path_factory.mktemp("home")
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(home / "data"))
        mp.setenv("HOME", str(home))
        mp.chdir(cwd)
        threads, rng = torch.get_num_threads(), torch.get_rng_state()
        result = doctor.collect("auto", PROBE)
        assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    assert list(home.iterdir()) == [] and list(cwd.iterdir()) == []  # no run folder, nothing left behind
    return result


def test_the_in_process_report_has_every_field_of_its_type(report):
    check_report(report)
    check_report(json.loads(doctor.to_json(report)))  # and it goes through JSON unchanged in kind


def test_the_command_prints_one_json_object(tmp_path):
    """As a user runs it, from an empty folder with an empty user data dir: left empty."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    result = subprocess.run([*cli_command(), "doctor", "--json", "--seconds", str(PROBE)], capture_output=True,
                            text=True, timeout=180, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # one object, nothing else on stdout
    check_report(json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"{c} in the JSON")))
    assert list(home.iterdir()) == [] and list(cwd.iterdir()) == []


# Labels the human output must show, one aligned line each.
LABELS = ["charrnn-tui", "python", "torch", "torch CUDA", "cuDNN", "textual", "rich", "os", "machine", "device",
          "name", "memory of", "memory total", "memory available", "bf16 supported", "precision", "bf16 autocast",
          "recurrent layers", "head", "loss", "torch threads", "interop threads", "logical CPUs", "usable CPUs",
          "native bf16", "nvml installed", "nvml working", "nvml", "corpus", "preset", "model", "parameters",
          "batch size", "seq len", "threads (the fastest)", "tokens/s by threads", "train steps", "train tokens/s",
          "loss first", "loss last", "sample chars", "sample chars/s", "peak memory", "probe took"]


def labelled_lines(text: str) -> dict[str, str]:
    """label -> value of the indented lines (label and value are two or more spaces apart)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("  "):
            label, _, value = line.strip().partition("  ")
            rows[label] = value.strip()
    return rows


def test_the_human_output_has_a_line_per_field_aligned(report):
    text = doctor.render(report)
    rows = labelled_lines(text)
    assert set(LABELS) <= set(rows), set(LABELS) - set(rows)
    for group in ("versions", "system", "device", "precision", "cpu", "nvml"):
        assert f"\n{group}\n" in f"\n{text}"
    assert f"probe (the default run, {PROBE:g} s)" in text
    columns = {line.index(value) for line in text.splitlines() if line.startswith("  ")
               for value in [line.strip().partition("  ")[2].strip()] if value}
    assert len(columns) == 1  # every value starts in the same column
    assert rows["device"] == "cpu" and rows["train tokens/s"].replace(",", "").isdigit()
    assert "GPUs" not in rows and "compute capability" not in rows  # a GPU's fields, not shown on a CPU


def test_the_command_without_a_probe_in_words(capsys):
    assert main(["doctor", "--seconds", "0"]) == 0
    out = capsys.readouterr().out
    assert "probe (skipped: --seconds 0)" in out and "train tokens/s" not in out
    rows = labelled_lines(out)
    assert rows["charrnn-tui"] == doctor.package_version() and rows["torch"] == torch.__version__


def test_no_probe_in_json_is_null(capsys):
    assert main(["doctor", "--json", "--seconds", "0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["probe"] is None and data["device"]["type"] == "cpu"


def test_what_a_driver_or_an_error_says_reaches_the_terminal_printable(report):
    hostile = copy.deepcopy(report)
    hostile["device"]["name"] = "GPU\x1b]0;owned\x07\x1b[2J"
    hostile["nvml"]["detail"] = "driver \u202eevil\r"
    hostile["probe"] = {"seconds": 1.0, "error": "RuntimeError: \x1b[31mboom"}
    text = doctor.render(hostile)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
    assert "GPU␛]0;owned␇␛[2J" in text and "probe failed" in text


def test_json_never_holds_nan(report):
    broken = copy.deepcopy(report)
    broken["probe"]["loss_last"] = float("nan")
    broken["probe"]["train_tokens_per_s"] = float("inf")
    data = json.loads(doctor.to_json(broken))
    assert data["probe"]["loss_last"] is None and data["probe"]["train_tokens_per_s"] is None


def test_a_failed_probe_is_reported_and_exits_1(capsys, monkeypatch):
    def fail(*_):
        raise RuntimeError("out of memory\nmore detail")

    monkeypatch.setattr(doctor, "probe", fail)
    assert main(["doctor", "--json", "--seconds", "1"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["probe"] == {"error": "RuntimeError: out of memory"} and data["versions"]["torch"]


def test_the_cuda_fields_from_torch(monkeypatch):
    """The GPU branch, with torch's answers stood in (no GPU here)."""
    props = types.SimpleNamespace(major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: props)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (70 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    fields = doctor.device_report(torch.device("cuda"))
    assert fields == {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1, "capability": "9.0",
                      "memory_total_bytes": 80 * 2**30, "memory_free_bytes": 70 * 2**30,
                      "memory_of": "GPU (cudaMemGetInfo)", "bf16_supported": True}
    assert "memory available    70.0 GiB" in doctor.render({"device": fields})


def fake_nvml(monkeypatch, init) -> None:
    module = types.ModuleType("pynvml")
    module.__spec__ = importlib.machinery.ModuleSpec("pynvml", None)
    module.nvmlInit = init
    module.nvmlShutdown = lambda: None
    module.nvmlSystemGetDriverVersion = lambda: b"550.54.15"
    module.nvmlDeviceGetCount = lambda: 2
    monkeypatch.setitem(sys.modules, "pynvml", module)


def test_nvml_absent_is_one_line():
    if "pynvml" in sys.modules or doctor.importlib.util.find_spec("pynvml") is not None:
        pytest.skip("nvidia-ml-py is installed here")
    nvml = doctor.nvml_report(torch.device("cpu"))
    assert nvml["installed"] is False and nvml["working"] is False
    assert "\n" not in nvml["detail"] and "charrnn-tui[gpu]" in nvml["detail"]


def test_nvml_that_starts_or_fails(monkeypatch):
    fake_nvml(monkeypatch, lambda: None)
    assert doctor.nvml_report(torch.device("cpu")) == {"installed": True, "working": True,
                                                      "detail": "driver 550.54.15, 2 GPUs"}

    def no_driver():
        raise OSError("NVML Shared Library Not Found\nsecond line")

    fake_nvml(monkeypatch, no_driver)
    nvml = doctor.nvml_report(torch.device("cpu"))
    assert nvml == {"installed": True, "working": False, "detail": "NVML did not start: NVML Shared Library Not Found"}


def test_system_memory_reads_proc_meminfo():
    total, available = doctor.system_memory()
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    assert isinstance(total, int) and isinstance(available, int) and 0 < available <= total


# ---- --version, --help and slips ---------------------------------------------------------------------
def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"charrnn-tui {doctor.package_version()}\n"


def test_version_from_the_console_script():
    result = run_cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"charrnn-tui {doctor.package_version()}\n", "")


def test_doctor_help(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["doctor", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "--seconds N" in out and "(default: 15)" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "doctor [--json]" in capsys.readouterr().out  # listed with the other commands


@pytest.mark.parametrize(("argv", "said"), [
    (["doctor", "--jsn"], "charrnn-tui doctor: error: unknown option --jsn; did you mean --json? "
                          "(see charrnn-tui doctor --help)"),
    (["doctor", "--seconds", "-1"], "charrnn-tui doctor: error: argument --seconds: must be 0 or a positive "
                                    "number, not -1 (see charrnn-tui doctor --help)"),
    (["docter"], "charrnn-tui: error: unknown command or corpus 'docter'; did you mean 'doctor'?"),
    (["diagnose"], "charrnn-tui: error: unknown command or corpus 'diagnose'; did you mean 'doctor'?"),
])
def test_slips_get_one_line(capsys, argv, said):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err
