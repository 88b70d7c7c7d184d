"""The cache folder's lock: exclusive across processes (fcntl here), and Windows' msvcrt branch
(one locked byte, retried until free) run with a stand-in for msvcrt."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from backend import shared_lock

ROOT = Path(__file__).resolve().parents[2]

HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from backend.shared_lock import folder_lock\n"
    "with folder_lock(Path(sys.argv[1])):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


@pytest.mark.skipif(sys.platform == "win32", reason="the fcntl path")
def test_a_second_process_waits_for_the_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "1.0"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        waited = []
        start = time.monotonic()
        with shared_lock.folder_lock(tmp_path, on_wait=lambda: waited.append(time.monotonic())):
            held_for = time.monotonic() - start
        assert waited and held_for > 0.3  # it blocked until the holder let go
    finally:
        holder.wait(timeout=30)
    with shared_lock.folder_lock(tmp_path, on_wait=lambda: pytest.fail("nobody holds it now")):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=30)
    with shared_lock.folder_lock(tmp_path, on_wait=lambda: pytest.fail("the dead holder's lock must be gone")):
        pass


class FakeMsvcrt(types.SimpleNamespace):
    """msvcrt.locking: refuses ``busy`` times, then grants; records every call."""

    LK_NBLCK, LK_UNLCK = 2, 0

    def __init__(self, busy: int) -> None:
        super().__init__(calls=[], busy=busy)

    def locking(self, fd, mode, nbytes):
        self.calls.append((mode, nbytes))
        if mode == self.LK_NBLCK and self.busy > 0:
            self.busy -= 1
            raise OSError(36, "Resource deadlock avoided")  # what Windows raises for a held region


def test_windows_branch_locks_one_byte_retries_until_free_and_unlocks(tmp_path, monkeypatch):
    fake = FakeMsvcrt(busy=3)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    monkeypatch.setattr(shared_lock, "WINDOWS", True)
    monkeypatch.setattr(shared_lock, "WINDOWS_RETRY_S", 0.001)
    waits = []
    with shared_lock.folder_lock(tmp_path / "entry", on_wait=lambda: waits.append(1)):
        assert fake.calls == [(fake.LK_NBLCK, 1)] * 4  # refused three times, granted the fourth
    assert waits == [1]  # told once, before waiting
    assert fake.calls[-1] == (fake.LK_UNLCK, 1)
    assert (tmp_path / "entry" / shared_lock.LOCK_FILE).is_file()
