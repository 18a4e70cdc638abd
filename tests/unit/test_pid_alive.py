import os
import subprocess
import sys
import time

from agents.services import _pid_alive


def test_live_process_is_alive():
    assert _pid_alive(os.getpid())


def test_zombie_and_reaped_processes_are_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # exited but not reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    assert not _pid_alive(child.pid)
    child.wait()
    assert not _pid_alive(child.pid)
    assert not _pid_alive(None)
