"""The process backend on real processes: pid files, identity, stop."""

import sys
import time

import pytest

from endpoints_app.controller import process

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]


@pytest.fixture
def sleeper(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    pid = process.start("ep-blue-abc123", SLEEPER, {"PATH": "/usr/bin:/bin"}, str(tmp_path))
    yield pid
    process.stop(pid, "ep-blue-abc123", grace=1)


def test_a_started_instance_has_a_pid_file_a_log_and_is_recognised(sleeper):
    assert process.pid_files() == {"ep-blue-abc123": sleeper}
    assert process.is_running(sleeper, "ep-blue-abc123")
    # The same pid under another instance's name is not that instance (a recycled pid).
    assert not process.is_running(sleeper, "ep-green-def456")
    assert "starting instance ep-blue-abc123" in process.tail(process.log_path("ep-blue-abc123"), 5)


def test_forgetting_an_old_pid_keeps_its_successors_pid_file(sleeper):
    process.forget("ep-blue-abc123", pid=sleeper + 100000)
    assert process.pid_files() == {"ep-blue-abc123": sleeper}
    process.forget("ep-blue-abc123", pid=sleeper)
    assert process.pid_files() == {}


def test_stop_ends_the_process_and_removes_its_pid_file(sleeper):
    process.stop(sleeper, "ep-blue-abc123", grace=2)
    assert not process.is_running(sleeper, "ep-blue-abc123")
    # A killed process can still show as running for a moment while the kernel tears it down.
    deadline = time.monotonic() + 10
    while process.proc_state(sleeper) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.proc_state(sleeper) in (None, "Z")
    assert process.pid_files() == {}


def test_the_cause_of_a_failure_is_the_output_since_the_last_start(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    log = process.log_path("x")
    log.write_text("=== 10:00 starting instance x (attempt 1) ===\nold error\n"
                   "=== 10:01 starting instance x (attempt 2) ===\nTraceback\nValueError: new error\n")
    assert process.last_attempt(log) == "Traceback\nValueError: new error"
