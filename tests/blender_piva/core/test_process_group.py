"""The backend's process group is started, stopped and killed the same way on every platform:
the POSIX path runs for real here; Windows' is exercised with a recording stand-in for Popen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from blender_piva.core import process_group

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="the real POSIX path")

SLEEPER = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\nprint('up', flush=True)\ntime.sleep(60)\n"


def start_sleeper(**kwargs) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, text=True, **kwargs)
    assert proc.stdout.readline().strip() == "up"  # its handler is installed
    return proc


@posix_only
def test_posix_child_runs_in_its_own_session_and_stops_on_sigterm():
    assert process_group.popen_kwargs(windows=False) == {"start_new_session": True}
    proc = start_sleeper(**process_group.popen_kwargs(windows=False))
    try:
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)  # Ctrl+C to our group does not reach it
        process_group.terminate_group(proc, windows=False)
        assert proc.wait(timeout=30) == 7  # its SIGTERM handler ran: the backend's cancel path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    process_group.terminate_group(proc, windows=False)  # already gone: nothing happens
    process_group.kill_group(proc, windows=False)


@posix_only
def test_posix_kill_group_kills_and_reaps():
    proc = start_sleeper(**process_group.popen_kwargs(windows=False))
    process_group.kill_group(proc, windows=False)
    assert proc.returncode == -signal.SIGKILL
    assert not process_group.killed_from_outside(proc.returncode, windows=True)
    assert process_group.killed_from_outside(proc.returncode, windows=False)
    assert not process_group.killed_from_outside(1, windows=False) and not process_group.killed_from_outside(None)


class RecordingPopen:
    """Stands in for a Windows Popen: records what was sent to it."""

    def __init__(self, fail_ctrl_break: bool = False) -> None:
        self.calls: list[tuple] = []
        self.returncode: int | None = None
        self.pid = 4242
        self.fail_ctrl_break = fail_ctrl_break

    def poll(self):
        return self.returncode

    def send_signal(self, sig):
        self.calls.append(("send_signal", sig))
        if self.fail_ctrl_break:
            raise OSError("no console")

    def terminate(self):
        self.calls.append(("terminate",))

    def kill(self):
        self.calls.append(("kill",))
        self.returncode = 1

    def wait(self, timeout=None):
        self.calls.append(("wait",))
        return self.returncode


def test_windows_branch_uses_a_new_process_group_ctrl_break_and_terminate_process(monkeypatch):
    def no_killpg(*args):
        raise AssertionError("os.killpg must not be used on Windows")

    monkeypatch.setattr(os, "killpg", no_killpg, raising=False)
    kwargs = process_group.popen_kwargs(windows=True)
    assert kwargs == {"creationflags": 0x00000200}  # CREATE_NEW_PROCESS_GROUP
    proc = RecordingPopen()
    process_group.terminate_group(proc, windows=True)
    assert proc.calls == [("send_signal", 1)]  # CTRL_BREAK_EVENT: the backend handles SIGBREAK as SIGTERM
    process_group.kill_group(proc, windows=True)
    assert proc.calls[1:] == [("kill",), ("wait",)]
    process_group.kill_group(proc, windows=True)  # already ended: nothing more
    assert len(proc.calls) == 3


def test_windows_without_a_console_falls_back_to_terminate():
    proc = RecordingPopen(fail_ctrl_break=True)
    process_group.terminate_group(proc, windows=True)
    assert proc.calls == [("send_signal", 1), ("terminate",)]


def test_the_backend_treats_sigbreak_like_sigterm(monkeypatch):
    from backend.stages import context

    installed = {}
    monkeypatch.setattr(context.signal, "signal", lambda signum, handler: installed.setdefault(signum, handler))
    if not hasattr(signal, "SIGBREAK"):
        monkeypatch.setattr(signal, "SIGBREAK", 21, raising=False)  # what Windows' signal module has
    context.stop_on_sigterm()
    assert set(installed) == {signal.SIGTERM, signal.SIGBREAK}
    assert installed[signal.SIGBREAK] is installed[signal.SIGTERM] is context._on_sigterm
