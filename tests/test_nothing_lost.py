"""Nothing lost, no debris: failed starts leave no run folder, an overwrite never leaves the target missing,
a killed writer's leftovers are cleaned by the next run, a failed checkpoint save keeps the last good one."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers_engine import write_paired_folders

from ldct.atomic import atomic_dir, atomic_file
from ldct.cli import main


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture(scope="module")
def paired(shared_data, tmp_path_factory) -> Path:
    return write_paired_folders(shared_data, tmp_path_factory.mktemp("paired") / "data", size=64)


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "empty-folder"])
def test_failed_start_leaves_no_run_folder_and_retry_is_not_refused(paired, tmp_path, capsys, existing):
    """The data is built (split.json, cache written) and then the run fails before step 1."""
    run = tmp_path / "run"
    if existing:
        run.mkdir()
    args = ["train", "dncnn", "--data", str(paired), "-o", str(run), "--max-steps", "2",
            "--set", "data.samples_per_epoch=4", "--set", "train.batch_size=8"]
    for _ in range(2):  # the retry gets the same real error, not "run folder is not empty"
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "fewer than one batch" in err[0], err
        assert run.exists() == existing
        assert not existing or not any(run.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_of_a_folder_never_leaves_the_target_missing(tmp_path):
    out = tmp_path / "series"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("0")
    missing = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (out / "v").is_file():
                missing.append(1)

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(1, 60):
            with atomic_dir(out, overwrite=True) as tmp:
                (tmp / "v").write_text(str(i))
    finally:
        stop.set()
        t.join()
    assert not missing, f"target missing {len(missing)} times during overwrites"
    assert (out / "v").read_text() == "59"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # no .old, no temporaries


def test_old_output_left_by_a_killed_overwrite_is_put_back(sample_dicom, tmp_path, capsys):
    """Killed between the two renames of a non-exchanging overwrite: only ``.NAME.old`` survived."""
    out = tmp_path / "out.npy"
    assert main(["convert", str(sample_dicom), str(out)]) == 0
    good = out.read_bytes()
    series = tmp_path / "series"
    assert main(["convert", str(sample_dicom), str(series)]) == 0
    digest = _tree_digest(series)
    os.replace(series, tmp_path / ".series.old")  # the state such a kill leaves
    # the next write to that output (without --overwrite) restores the old series, then refuses politely
    assert main(["convert", str(sample_dicom), str(series)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _tree_digest(series) == digest and not (tmp_path / ".series.old").exists()
    assert out.read_bytes() == good


def test_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    from ldct.atomic import _HOST

    out = tmp_path / "vol.npy"
    dead, live = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale_file = tmp_path / f".vol.npy.ldct-{_HOST}-{dead}.abc.tmp.npy"
        stale_dir = tmp_path / f".series.ldct-{_HOST}-{dead}.xyz.tmp"
        busy = tmp_path / f".vol.npy.ldct-{_HOST}-{live.pid}.def.tmp.npy"
        other_host = tmp_path / f".vol.npy.ldct-otherhost-{dead}.abc.tmp.npy"  # a shared file system
        users = tmp_path / f".vol.npy.{dead}.abc.tmp.npy"  # not ldct's naming: never touched
        stale_file.write_bytes(b"partial")
        stale_dir.mkdir()
        (stale_dir / "x.dcm").write_bytes(b"partial")
        for p in (busy, other_host, users):
            p.write_bytes(b"keep")
        with atomic_file(out) as tmp:
            assert tmp.name.startswith(f".vol.npy.ldct-{_HOST}-{os.getpid()}.")
            np.save(tmp, np.zeros(3))
        assert not stale_file.exists() and not stale_dir.exists()
        assert busy.exists() and other_host.exists() and users.exists()
        assert np.load(out).shape == (3,)
    finally:
        live.kill()
        live.wait()


def test_disk_full_while_saving_a_checkpoint_keeps_the_last_good_one(paired, tmp_path):
    """The kernel refuses file writes beyond RLIMIT_FSIZE (EFBIG), as a full disk would refuse them."""
    run = tmp_path / "run"
    base = [sys.executable, "-m", "ldct", "train", "dncnn", "--data", str(paired), "-o", str(run),
            "--set", "data.patch_size=32", "--set", "train.batch_size=2", "--set", "train.ckpt_every=1",
            "--set", "train.val_every=0", "--set", "train.sample_every=0"]
    ok = subprocess.run([*base, "--max-steps", "1"], check=False, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    good = run / "checkpoints" / "step_0000001"
    before = _tree_digest(good)
    limit = (good / "weights.safetensors").stat().st_size // 2

    def small_disk() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run([*base, "--max-steps", "2", "--resume"], check=False, capture_output=True, text=True,
                          timeout=300, preexec_fn=small_disk)
    assert full.returncode == 2, full.stderr
    err = [ln for ln in full.stderr.splitlines() if ln.startswith("ldct: error:")]
    assert len(err) == 1 and "Traceback" not in full.stderr, full.stderr
    assert "step 2" in err[0] and "step_0000001" in err[0], err[0]
    assert (run / "checkpoints" / "last").read_text().strip() == "step_0000001"
    assert _tree_digest(good) == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last", "step_0000001"]  # no debris
    again = subprocess.run([*base, "--max-steps", "2", "--resume"], check=False, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr  # space back: the run continues from the kept checkpoint
    assert (run / "checkpoints" / "last").read_text().strip() == "step_0000002"
