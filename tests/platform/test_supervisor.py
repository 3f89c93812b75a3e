"""The supervisor `make run` starts restarts any child that exits, sooner the first time, later each time it
keeps dying young, and says why. (The whole studio under it, hurt part by part: tests/faults/.)"""

import sys
import time

from portal.supervisor import Child, commands


def run_until(child: Child, starts: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while child.restarts < starts - 1 or child.restart_at is None:
        assert time.monotonic() < deadline, f"only {child.restarts} restarts"
        child.check(time.monotonic())
        time.sleep(0.02)


def test_it_restarts_a_child_that_keeps_dying_with_a_delay_that_doubles(capsys):
    child = Child("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    child.start()
    run_until(child, starts=3)
    out = capsys.readouterr().out
    assert "supervisor: crasher (pid" in out and "exited with status 3; restarting it in 0.5 s" in out
    assert "restarting it in 1 s" in out and "restarting it in 2 s" in out
    assert "supervisor: restarting crasher (restart 2)" in out


def test_it_names_the_signal_that_killed_a_child(capsys):
    child = Child("victim", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    child.start()
    run_until(child, starts=1)
    assert "was killed by SIGKILL; restarting it in 0.5 s" in capsys.readouterr().out


def test_a_child_that_stayed_up_is_restarted_quickly_again():
    child = Child("steady", [sys.executable, "-c", "raise SystemExit(0)"])
    child.delay = Child.MAX_DELAY  # as after a crash loop
    child.start()
    child.started -= Child.STABLE_SECONDS  # it ran long enough to count as started well
    child.proc.wait(timeout=10)
    now = time.monotonic()
    child.check(now)
    assert child.restart_at == now + Child.FIRST_DELAY


def test_it_runs_several_worker_processes_and_beat_once():
    children = commands(8000, "127.0.0.1", 2, 4, "node-a", worker_processes=3, schedule="/data/beat-schedule")
    assert list(children) == ["web", "worker-1", "worker-2", "worker-3", "beat"]
    assert children["worker-2"][-8:] == ["-Q", "celery,node.node-a", "-n", "worker2@node-a", "-c", "4", "-l", "info"]
    assert "-B" not in children["worker-1"]
    assert children["beat"][-4:] == ["-l", "info", "-s", "/data/beat-schedule"]
