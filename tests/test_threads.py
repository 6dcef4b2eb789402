import torch
from helpers import LocalRun, tiny_config

from charrnn_tui.engine.protocol import Pause
from charrnn_tui.engine.run.threads import ThreadShare, other_training_runs


def test_runs_training_in_one_folder_share_the_cores(repetitive_text, runs_dir):
    own = LocalRun(tiny_config(repetitive_text, report_interval=0.05), runs_dir, "own").start()
    other = LocalRun(tiny_config(repetitive_text, report_interval=0.05), runs_dir, "other").start()
    try:
        assert other_training_runs(runs_dir, own.run_dir) == 1
        assert other_training_runs(runs_dir) == 2 and other_training_runs(runs_dir / "nowhere") == 0
        saved = torch.get_num_threads()
        try:
            ThreadShare(runs_dir, own.run_dir, cores=8)()
            assert torch.get_num_threads() == 4  # this run and the other one
            other.trainer.request(Pause())
            deadline = __import__("time").monotonic() + 10
            while other.server.record.state != "paused":
                assert __import__("time").monotonic() < deadline
                __import__("time").sleep(0.02)
            other.server.write_status()
            ThreadShare(runs_dir, own.run_dir, cores=8)()
            assert torch.get_num_threads() == 8  # a paused run uses no cores
            ThreadShare(runs_dir, None, cores=1)()
            assert torch.get_num_threads() == 1  # never fewer than one
        finally:
            torch.set_num_threads(saved)
    finally:
        own.stop()
        other.stop()


def test_a_cpu_run_keeps_the_fastest_thread_count_it_timed(tmp_path, monkeypatch):
    """The share is an upper bound: each count from it down to one (halving) is timed over a few
    progress reports, there and back, the run's first reports and the first after a change not
    counted, and the fastest kept; reports with no speed (a GPU, the index being built) wait."""
    from charrnn_tui.engine.run import threads

    speeds = {4: 100.0, 2: 150.0, 1: 120.0}  # a small model: two threads beat four
    said: list[str] = []
    share = ThreadShare(tmp_path, None, cores=4, on_choice=said.append)
    saved = torch.get_num_threads()
    try:
        share()  # the run starts: the whole share first
        timed = []
        while share.trials:
            n = torch.get_num_threads()
            timed.append(n)
            share(None)  # no speed to go by: nothing counts, nothing moves on
            # the run's first reports, and one that straddles a change, are slow and must not count
            straddling = len(timed) <= threads.STARTING_REPORTS or timed[-2] != n
            share(1.0 if straddling else speeds[n])
        skip, block = threads.SKIPPED_REPORTS, threads.TIMED_REPORTS
        assert timed == ([4] * (threads.STARTING_REPORTS + block) + [2] * (skip + block) + [1] * (skip + 2 * block)
                         + [2] * (skip + block) + [4] * (skip + block))
        assert torch.get_num_threads() == 2 and share.chosen == 2
        assert share.rates == {n: [v] * 2 * block for n, v in speeds.items()}
        assert said == ["CPU threads: 2 of 4, the fastest (tokens/s by threads: 4: 100, 2: 150, 1: 120)"]
        for _ in range(10):  # then it stays
            share(500.0)
        assert torch.get_num_threads() == 2 and len(said) == 1
        monkeypatch.setattr(threads, "other_training_runs", lambda *_: 1)  # another run starts training
        share.checked = -threads.INTERVAL
        share(100.0)
        assert torch.get_num_threads() == 2 and share.trials == [2, 1, 1, 2]  # timed again within the new share
        share(100.0)
        monkeypatch.setattr(threads, "other_training_runs", lambda *_: 0)  # and it ends, mid-trial
        share.checked = -threads.INTERVAL
        share(100.0)
        assert torch.get_num_threads() == 4 and share.trials == [4, 2, 1, 1, 2, 4] and share.rates == {}
    finally:
        torch.set_num_threads(saved)


def test_thread_counts_timed_halve_from_the_share_to_one():
    from charrnn_tui.engine.run.threads import candidates

    assert candidates(1) == [1] and candidates(2) == [2, 1] and candidates(6) == [6, 3, 1]
    assert candidates(16) == [16, 8, 4, 2, 1]
