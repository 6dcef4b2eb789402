import torch
from helpers import LocalRun, tiny_config

from charrnn_tui.engine.threads import ThreadShare, other_training_runs


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
            other.trainer.pause()
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
