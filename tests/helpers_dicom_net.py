"""Helpers for the DICOM-network tests: CT series with valid UIDs, free ports, a running `ldct serve`, Orthanc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pydicom
from pydicom.uid import CTImageStorage, generate_uid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ct_series(sample_dicom: Path, dst: Path, *, first: int = 9, n: int = 3, number: int = 2,
              modality: str = "CT") -> str:
    """``n`` slices of the bundled sample as a series a scanner would send: CT Image Storage, fresh UIDs."""
    dst.mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    for i, f in enumerate(sorted(sample_dicom.iterdir())[first:first + n]):
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.SeriesNumber = series, study, number
        ds.PatientID, ds.Modality = "NODE-TEST", modality
        ds.save_as(dst / f"{i:03d}.dcm")
    return series


def dcmtk(tool: str) -> str:
    """dcmtk's own tool (pynetdicom installs Python scripts of the same names into the virtual environment)."""
    dump = shutil.which("dcmdump")
    if dump is None:
        raise RuntimeError("dcmtk is not installed (apt-get install dcmtk; scripts/test.sh does)")
    return str(Path(dump).parent / tool)


def storescu(files: list[Path] | Path, port: int, aet: str = "SCANNER", called: str = "LDCT") -> subprocess.CompletedProcess:
    if isinstance(files, Path):
        files = sorted(files.iterdir()) if files.is_dir() else [files]
    paths = [str(f) for f in files]
    return subprocess.run([dcmtk("storescu"), "-xv", "-aet", aet, "-aec", called, "127.0.0.1", str(port), *paths],
                          capture_output=True, text=True, timeout=120, check=False)


def echoscu(port: int, called: str) -> bool:
    r = subprocess.run([dcmtk("echoscu"), "-aet", "SCANNER", "-aec", called, "127.0.0.1", str(port)],
                       capture_output=True, text=True, timeout=30, check=False)
    return r.returncode == 0


def start_serve(args: list[str], log: Path, port: int, backend: str = "torch") -> subprocess.Popen:
    env = {**os.environ, "LDCT_BACKEND": backend, "OMP_NUM_THREADS": "2"}
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "ldct"), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=open(log, "a"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ldct serve exited early:\n{log.read_text()}")
        if echoscu(port, "LDCT"):
            return proc
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"ldct serve did not start:\n{log.read_text()}")


def stop(proc: subprocess.Popen, hard: bool = False) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        proc.wait(timeout=60)


def wait_for(cond, timeout: float = 120.0, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    return cond()


class Orthanc:
    """A real Orthanc (Debian package) on the loopback interface, as the PACS."""

    def __init__(self, root: Path):
        exe = shutil.which("Orthanc")
        if exe is None:
            raise RuntimeError("Orthanc is not installed (apt-get install orthanc; scripts/test.sh does)")
        self.dicom_port, self.http_port = free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        cfg = {"Name": "ldct-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
               "DicomAet": "ORTHANC", "DicomPort": self.dicom_port, "HttpPort": self.http_port,
               "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
               "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True, "Plugins": [], "HttpServerEnabled": True}
        (root / "orthanc.json").write_text(json.dumps(cfg))
        self.proc = subprocess.Popen([exe, str(root / "orthanc.json")], stdout=open(root / "orthanc.log", "w"),
                                     stderr=subprocess.STDOUT)
        if not wait_for(lambda: self._ok("/system"), 60):
            self.proc.kill()
            raise RuntimeError(f"Orthanc did not start:\n{(root / 'orthanc.log').read_text()[-2000:]}")

    def _ok(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except OSError:
            return False

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def series(self) -> list[dict]:
        return [self.get(f"/series/{s}") for s in self.get("/series")]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
