"""Usage mistakes on the command line: one message, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ldct", *args], capture_output=True, text=True, timeout=120)


def test_missing_option_exits_2_without_traceback(tmp_path):
    r = _run("simulate", str(tmp_path / "x.npy"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "--out" in r.stderr


def test_unknown_command_exits_2():
    r = _run("nosuch")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "nosuch" in r.stderr
