"""Blender's own output into a log file at the file-descriptor level: what C code writes to fd 1 and 2
(here ``os.write``, which bypasses ``sys.stdout`` as Blender's C code does) lands in the file, the
terminal keeps everything written before and after, and the descriptors come back on failure."""

from __future__ import annotations

import os

import pytest

from blender_piva.core import quiet


def test_a_c_level_write_goes_to_the_file_not_the_terminal(tmp_path, capfd):
    log = tmp_path / "capture.log"
    print("before", flush=True)
    with quiet.redirect_fds_to(log):
        os.write(1, b"Saved: '/tmp/x/render.exr'\n")
        os.write(2, b"WARNING CUEW initialization failed\n")
    print("after", flush=True)
    os.write(2, b"stderr after\n")
    out, err = capfd.readouterr()
    assert out == "before\nafter\n" and err == "stderr after\n"
    assert log.read_text() == "Saved: '/tmp/x/render.exr'\nWARNING CUEW initialization failed\n"


def test_the_descriptors_come_back_when_the_block_raises(tmp_path, capfd):
    log = tmp_path / "blender.log"
    with pytest.raises(RuntimeError, match="render failed"):
        with quiet.redirect_fds_to(log, fds=(1,)):
            os.write(1, b"noise\n")
            raise RuntimeError("render failed")
    os.write(1, b"visible\n")
    assert capfd.readouterr().out == "visible\n"
    with quiet.redirect_fds_to(log, fds=(1,)):  # appended, not replaced
        os.write(1, b"more noise\n")
    assert log.read_text() == "noise\nmore noise\n"


def test_an_unopenable_log_raises_before_redirecting(tmp_path, capfd):
    with pytest.raises(OSError):
        with quiet.redirect_fds_to(tmp_path / "missing" / "x.log"):
            pass
    os.write(1, b"still here\n")
    assert capfd.readouterr().out == "still here\n"


def test_blender_output_follows_the_chosen_log(tmp_path, capfd):
    with quiet.blender_output() as used:  # nothing chosen: the output stays on the terminal
        os.write(1, b"console\n")
    assert used is None and capfd.readouterr().out == "console\n"

    job = {"dir": None}
    with quiet.log_blender_output(lambda: job["dir"] / "capture.log" if job["dir"] else None):
        with quiet.blender_output() as used:  # the job folder does not exist yet
            os.write(1, b"early\n")
        assert used is None
        job["dir"] = tmp_path / "JOB"
        with quiet.blender_output() as used:  # its folder is not made yet either: no file appears
            os.write(1, b"still early\n")
        assert used is None and not job["dir"].exists()
        job["dir"].mkdir()
        with quiet.blender_output() as used:
            os.write(1, b"Saved: view 1\n")
        assert used == tmp_path / "JOB" / "capture.log"
    assert quiet.current_log() is None  # the choice ends with the block
    assert capfd.readouterr().out == "early\nstill early\n"
    assert (tmp_path / "JOB" / "capture.log").read_text() == "Saved: view 1\n"



def test_buffered_prints_land_on_their_own_side_when_stdout_is_a_pipe(tmp_path):
    """Python buffers stdout fully in a pipe: what was printed before the block reaches the pipe, what
    is printed inside reaches the file (the buffers are flushed at both edges)."""
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "capture.log"
    code = (
        "import os; from blender_piva.core import quiet\n"
        "print('before')\n"
        f"with quiet.redirect_fds_to({str(log)!r}):\n"
        "    print('inside'); os.write(1, b'Saved: c level\\n')\n"
        "print('after')\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout == "before\nafter\n"
    assert log.read_text() == "inside\nSaved: c level\n"
