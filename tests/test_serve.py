"""``ldct serve`` against real components on the loopback interface: dcmtk's storescu/echoscu as the scanner,
Orthanc (Debian package) as the PACS."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
from helpers_dicom_net import Orthanc, ct_series, free_port, start_serve, stop, storescu, wait_for

from ldct.io import read_volume


def _derived(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*/*") if p.is_dir() and not p.name.startswith("."))


def test_serve_receives_denoises_and_survives_a_kill(sample_dicom, tmp_path):
    port = free_port()
    spool, out, log = tmp_path / "spool", tmp_path / "out", tmp_path / "serve.log"
    series_dir = tmp_path / "scan"
    uid = ct_series(sample_dicom, series_dir, n=3)
    mr_dir = tmp_path / "mr"
    ct_series(sample_dicom, mr_dir, n=1, modality="MR")
    args = ["--out", str(out), "--spool", str(spool), "--idle", "3", "--allow", "SCANNER"]
    proc = start_serve(args, log, port)
    try:
        # a sender that is not allowed is rejected at association; nothing reaches the spool
        bad = storescu(series_dir, port, aet="INTRUDER")
        assert bad.returncode != 0 or "Rejected" in bad.stderr + bad.stdout
        assert not any((spool / "incoming").iterdir())
        # the series and a non-CT object; then kill -9 before the series is complete (idle 3 s)
        assert storescu(series_dir, port).returncode == 0
        assert storescu(mr_dir, port).returncode == 0
        received = sorted((spool / "incoming").glob("*/*.dcm"))
        assert len(received) == 3  # every acknowledged instance is on disk; the MR object was skipped
        stop(proc, hard=True)
        assert not _derived(out) if out.exists() else True
        proc = start_serve(args, log, port)  # restart: resumes from the spool
        got = wait_for(lambda: _derived(out), 180)
        assert len(got) == 1, log.read_text()
        vol, src = read_volume(got[0]), read_volume(series_dir)
        assert vol.shape == src.shape and np.allclose(vol.positions, src.positions)
        ds = pydicom.dcmread(sorted(got[0].iterdir())[0])
        assert ds.SeriesInstanceUID != uid and "DERIVED" in ds.ImageType and ds.StudyInstanceUID == pydicom.dcmread(
            sorted(series_dir.iterdir())[0]).StudyInstanceUID
        text = log.read_text()
        assert "not a CT image" in text and "rejected" in text and "3 slices denoised" in text
        assert wait_for(lambda: any((spool / "done").iterdir()), 30)
        # processed exactly once: another pass finds nothing to do
        stop(proc)
        proc = start_serve(args, log, port)
        assert len(_derived(out)) == 1 and not any((spool / "work").iterdir())
        # killed mid-processing: the whole 20-slice sample, kill -9 once the worker has taken it
        whole = tmp_path / "whole"
        ct_series(sample_dicom, whole, first=0, n=20, number=4)
        assert storescu(whole, port).returncode == 0
        assert wait_for(lambda: any((spool / "work").glob("*/input")), 60, 0.05)
        stop(proc, hard=True)
        assert len(_derived(out)) == 1  # not finished before the kill
        proc = start_serve(args, log, port)
        assert wait_for(lambda: len(_derived(out)) == 2, 240), log.read_text()
        big = [d for d in _derived(out) if read_volume(d).shape[0] == 20]
        assert len(big) == 1 and len(list(big[0].glob("*.dcm"))) == 20
    finally:
        stop(proc)


def test_serve_forwards_to_orthanc_from_three_senders(sample_dicom, tmp_path):
    pacs = Orthanc(tmp_path / "orthanc")
    port = free_port()
    log = tmp_path / "serve.log"
    dest = f"ORTHANC@127.0.0.1:{pacs.dicom_port}"
    check = subprocess.run([str(Path(sys.executable).parent / "ldct"), "serve", "--check", "--forward", dest,
                            "--spool", str(tmp_path / "spool")], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "answers C-ECHO" in check.stdout
    nowhere = subprocess.run([str(Path(sys.executable).parent / "ldct"), "serve", "--check", "--forward",
                              f"NOBODY@127.0.0.1:{free_port()}", "--spool", str(tmp_path / "spool")],
                             capture_output=True, text=True, timeout=300)
    assert nowhere.returncode == 2 and len(nowhere.stderr.strip().splitlines()) == 1
    proc = start_serve(["--forward", dest, "--spool", str(tmp_path / "spool"), "--idle", "2", "--forward-other"],
                       log, port)
    try:
        dirs = [tmp_path / f"scan{k}" for k in range(3)]
        uids = [ct_series(sample_dicom, d, first=5 + 3 * k, n=3, number=10 + k) for k, d in enumerate(dirs)]
        mr_uid = ct_series(sample_dicom, tmp_path / "mr", n=1, number=30, modality="MR")
        assert storescu(tmp_path / "mr", port).returncode == 0  # not CT: forwarded untouched
        results = [None] * 3

        def send(k: int) -> None:
            results[k] = storescu(dirs[k], port, aet=f"SCANNER{k}")

        threads = [threading.Thread(target=send, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]

        def derived():
            s = [x for x in pacs.series() if "ldct" in x["MainDicomTags"].get("SeriesDescription", "")]
            return s if len(s) == 3 and all(len(x["Instances"]) == 3 for x in s) else None

        found = wait_for(derived, 240)
        assert found, log.read_text()
        numbers = sorted(int(x["MainDicomTags"]["SeriesNumber"]) for x in found)
        assert numbers == [5010, 5011, 5012]
        assert not {x["MainDicomTags"]["SeriesInstanceUID"] for x in found} & set(uids)
        inst = pacs.get(f"/instances/{found[0]['Instances'][0]}/simplified-tags")
        assert inst["Modality"] == "CT" and "DERIVED" in inst["ImageType"] and inst["Rows"] == "512"
        assert log.read_text().count("sent)") == 3
        mr = wait_for(lambda: [x for x in pacs.series() if x["MainDicomTags"]["SeriesInstanceUID"] == mr_uid], 60)
        assert mr and len(mr[0]["Instances"]) == 1  # the original object, same UIDs
    finally:
        stop(proc)
        pacs.close()
