import torch
from helpers import LocalRun, tiny_config

from charrnn_tui.engine.protocol import Pause
from charrnn_tui.engine.run import threads
from charrnn_tui.engine.run.cpu_load import LOAD_HOLD, LOAD_WINDOW, OtherLoad, busy_cores, cpu_ticks
from charrnn_tui.engine.run.threads import ThreadShare, load_share, other_training_runs


def NO_READING() -> None:  # noqa: N802 - the machine's load, never known: the runs folder alone decides
    return None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_runs_training_in_one_folder_share_the_cores(repetitive_text, runs_dir):
    own = LocalRun(tiny_config(repetitive_text, report_interval=0.05), runs_dir, "own").start()
    other = LocalRun(tiny_config(repetitive_text, report_interval=0.05), runs_dir, "other").start()
    try:
        assert other_training_runs(runs_dir, own.run_dir) == 1
        assert other_training_runs(runs_dir) == 2 and other_training_runs(runs_dir / "nowhere") == 0
        saved = torch.get_num_threads()
        try:
            ThreadShare(runs_dir, own.run_dir, cores=8, other_load=NO_READING)()
            assert torch.get_num_threads() == 4  # this run and the other one
            other.trainer.request(Pause())
            deadline = __import__("time").monotonic() + 10
            while other.server.record.state != "paused":
                assert __import__("time").monotonic() < deadline
                __import__("time").sleep(0.02)
            other.server.write_status()
            ThreadShare(runs_dir, own.run_dir, cores=8, other_load=NO_READING)()
            assert torch.get_num_threads() == 8  # a paused run uses no cores
            ThreadShare(runs_dir, None, cores=1, other_load=NO_READING)()
            assert torch.get_num_threads() == 1  # never fewer than one
        finally:
            torch.set_num_threads(saved)
    finally:
        own.stop()
        other.stop()


def test_a_cpu_run_keeps_the_fastest_thread_count_it_timed(tmp_path, monkeypatch):
    """The share is an upper bound: each count from it down to one (halving) is timed over a few
    progress reports, there and back, the run's first 1.5 s and the first report after a change
    not counted, and the fastest kept; reports with no speed (a GPU, the index being built) wait."""
    speeds = {4: 100.0, 2: 150.0, 1: 120.0}  # a small model: two threads beat four
    said: list[str] = []
    clock = FakeClock()
    share = ThreadShare(tmp_path, None, cores=4, on_choice=said.append, clock=clock, other_load=NO_READING)
    saved = torch.get_num_threads()
    try:
        share()  # the run starts: the whole share first
        timed = []
        while share.trials:
            n = torch.get_num_threads()
            timed.append(n)
            share(None)  # no speed to go by: nothing counts, nothing moves on
            clock.now += 0.25  # a report every 0.25 s, the default
            # the run's first reports, and one that straddles a change, are slow and must not count
            straddling = clock.now < threads.STARTING_SECONDS or timed[-2] != n
            share(1.0 if straddling else speeds[n])
        assert timed == [4] * 7 + [2] * 3 + [1] * 5 + [2] * 3 + [4] * 3  # 5 at the start, then 1 at each change
        assert torch.get_num_threads() == 2 and share.chosen == 2
        assert share.rates == {n: [v] * 4 for n, v in speeds.items()}  # two reports a count, each way
        assert said == ["CPU threads: 2 of 4, the fastest (tokens/s by threads: 4: 100, 2: 150, 1: 120)"]
        for _ in range(10):  # then it stays
            clock.now += 0.25
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


def test_a_step_slowed_by_a_rival_ends_the_timing_of_its_count_at_once(tmp_path):
    """Issue 28 item 4: two thread pools fighting over 2 cores made a step take 3 s, and each count
    was timed over seven reports (a report is at least a step): 18 s lost. Timed in seconds, one
    such report is enough, the first of the run's and the first after a change included."""
    clock = FakeClock()
    share = ThreadShare(tmp_path, None, cores=2, clock=clock, other_load=NO_READING)
    saved = torch.get_num_threads()
    try:
        share()
        assert torch.get_num_threads() == 2 and share.trials == [2, 1, 1, 2]
        clock.now += 3.0  # one step, fighting
        share(310.0)
        assert torch.get_num_threads() == 1 and share.rates == {2: [310.0]}
        reports_at_one = 0
        while torch.get_num_threads() == 1:
            clock.now += 0.25
            share(33_000.0)
            reports_at_one += 1
        assert reports_at_one == 5  # one straddling the change, two each way
        clock.now += 3.0
        share(310.0)  # back at two threads: fighting again, and the first report says so
        assert share.trials == [] and share.chosen == 1 and torch.get_num_threads() == 1
        assert clock.now == 3.0 + 5 * 0.25 + 3.0  # 7.25 s to choose, where seven steps a count took 18 s
    finally:
        torch.set_num_threads(saved)


def test_a_core_others_keep_busy_at_the_start_is_left_to_them(tmp_path):
    """Runs in different runs folders see each other only as the machine's load: a run that starts
    while others keep a core busy never tries the count that would fight them."""
    saved = torch.get_num_threads()
    try:
        share = ThreadShare(tmp_path, None, cores=2, clock=FakeClock(), other_load=lambda: 0.7)
        share()
        assert share.share == 1 and share.trials == [] and torch.get_num_threads() == 1
        share = ThreadShare(tmp_path, None, cores=2, clock=FakeClock(), other_load=lambda: 0.3)  # an app drawing
        share()
        assert share.share == 2 and share.trials == [2, 1, 1, 2]
        share = ThreadShare(tmp_path, None, cores=8, clock=FakeClock(), other_load=lambda: 3.2)
        share()
        assert share.share == 4 and share.trials == [4, 2, 1, 1, 2, 4] and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(saved)


def test_the_share_falls_at_once_when_others_load_the_cores_and_rises_when_they_have_stopped(tmp_path):
    clock = FakeClock()
    load = [0.0]
    said: list[str] = []
    share = ThreadShare(tmp_path, None, cores=2, clock=clock, other_load=lambda: load[0], on_choice=said.append)
    saved = torch.get_num_threads()

    def report(seconds: float = 0.25) -> None:
        clock.now += seconds
        share(1000.0)

    try:
        share()
        assert share.share == 2
        for _ in range(20):
            report()
        assert share.trials == [] and share.share == 2
        load[0] = 1.0  # a run in another folder starts
        report(LOAD_WINDOW)
        assert share.share == 1 and torch.get_num_threads() == 1  # the first reading after it
        load[0] = 0.0  # a lull: its evaluation, or its save
        report(LOAD_WINDOW)
        report(LOAD_WINDOW)
        assert share.share == 1
        load[0] = 1.0
        report(LOAD_WINDOW)
        load[0] = 0.0  # it ends
        for _ in range(int(LOAD_HOLD / LOAD_WINDOW)):
            report(LOAD_WINDOW)
            assert share.share == 1
        report(LOAD_WINDOW)
        assert share.share == 2 and share.trials == [2, 1, 1, 2] and torch.get_num_threads() == 2
        assert said == ["CPU threads: 2 of 2, the fastest (tokens/s by threads: 2: 1,000, 1: 1,000)",
                        "CPU threads: at most 1 of 2, other processes keeping 1 busy",
                        "CPU threads: at most 2 of 2, other processes keeping 0 busy"]  # told when it changes
    finally:
        torch.set_num_threads(saved)


def test_the_share_left_by_others_load():
    assert [busy_cores(x) for x in (0.0, 0.4, 0.5, 0.67, 1.4, 1.6)] == [0, 0, 1, 1, 1, 2]
    assert load_share(2, 0) == 2 and load_share(2, 1) == 1 and load_share(2, 2) == 1
    assert load_share(8, 1) == 4 and load_share(8, 3) == 4 and load_share(8, 6) == 2 and load_share(8, 8) == 1


def stat(*cpus: tuple[int, int, int]) -> str:
    """/proc/stat's text for CPUs given as (busy user ticks, idle ticks, iowait ticks)."""
    total = [sum(c) for c in zip(*cpus, strict=True)]
    lines = [f"cpu  {total[0]} 0 0 {total[1]} {total[2]} 0 0 0 0 0"]
    lines += [f"cpu{n} {u} 0 0 {i} {w} 0 0 0 0 0" for n, (u, i, w) in enumerate(cpus)]
    return "\n".join([*lines, "intr 1 2 3", "ctxt 5"]) + "\n"


def test_the_load_others_put_on_this_process_cores_from_proc_stat():
    assert cpu_ticks(stat((10, 90, 5), (40, 60, 0)), [0, 1]) == (50, 205)
    assert cpu_ticks(stat((10, 90, 5), (40, 60, 0)), [1]) == (40, 100)  # taskset: only the CPUs it may use
    assert cpu_ticks(stat((10, 90, 5)), [3]) is None
    texts = iter([stat((0, 0, 0), (0, 0, 0)), stat((4, 4, 0), (4, 4, 0)),  # 0.08 s: too short to say
                  stat((100, 100, 0), (200, 0, 0))])  # 2 s on 2 CPUs: 3 cores-seconds busy
    own = iter([0.0, 0.05, 0.8])  # this process's CPU seconds: 0.8 of the 3
    load = OtherLoad([0, 1], read_stat=lambda: next(texts), own_cpu_seconds=lambda: next(own))
    load.tick = 0.01
    assert load() is None  # a window under MIN_WINDOW: it grows
    assert abs(load() - (3.0 - 0.8) / 2.0) < 1e-9


def test_thread_counts_timed_halve_from_the_share_to_one():
    from charrnn_tui.engine.run.threads import candidates

    assert candidates(1) == [1] and candidates(2) == [2, 1] and candidates(6) == [6, 3, 1]
    assert candidates(16) == [16, 8, 4, 2, 1]


def test_the_load_is_told_when_its_limit_changes_not_when_the_busy_cores_flap(tmp_path):
    """Two runs on 2 cores see each other keep 1 core busy, then 2 (an evaluation, a save), then 1:
    the limit stays 1 of 2 throughout, so it is told once."""
    clock, load, said = FakeClock(), [1.0], []
    saved = torch.get_num_threads()
    share = ThreadShare(tmp_path, None, cores=2, clock=clock, other_load=lambda: load[0], on_choice=said.append)
    try:
        share()
        for busy in (2.0, 1.0, 2.0, 1.0) * 3:
            load[0] = busy
            clock.now += LOAD_HOLD + LOAD_WINDOW  # past the hold: each reading is taken as it comes
            share(1000.0)
        assert share.share == 1
        assert said == ["CPU threads: at most 1 of 2, other processes keeping 1 busy"]
    finally:
        torch.set_num_threads(saved)
