"""``ldct serve``: a DICOM node beside the PACS. The scanner sends a series, the node denoises it and sends a
derived series on (and/or writes it to a folder); nobody changes their workflow.

- **Receive** (C-STORE SCP, pynetdicom): each instance is written to the spool on disk (temp file + rename)
  *before* it is acknowledged. Only the AE titles given by ``allow`` may connect (others are rejected at
  association). Objects that are not CT images are logged and skipped, or kept and forwarded untouched
  (``forward_other``). A broken object is answered with a failure status; the node carries on.
- **Process**: a series is complete when no instance of it has arrived for ``idle`` seconds. The spool moves
  it through ``incoming/<series>`` -> ``work/<series>/input`` (one rename), denoises it into
  ``work/<series>/output`` (written atomically, once), copies it to ``out`` and sends it to the destination
  (C-STORE SCU), then moves it to ``done/``.
- **Restart-safe**: every step is a rename or an atomic write, so a node killed at any point resumes where it
  stood. Received instances are processed exactly once; a derived series is created once and, if sending
  was cut, sent again with the same SOP Instance UIDs (a PACS stores them once). Nothing acknowledged is
  ever lost.
- **Logs**: one line per association (who, how many instances, how long) and per series (slices, seconds,
  where it went).

Instances of a series that arrive after it was taken for processing form a new batch (a second derived
series), with a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldct.errors import LdctError

log = logging.getLogger("ldct.serve")

CT_IMAGE_SOPS = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"}  # CT, Enhanced CT


@dataclass
class Destination:
    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AET@HOST:PORT``."""
        try:
            aet, rest = text.split("@", 1)
            host, port = rest.rsplit(":", 1)
            dest = cls(aet.strip(), host.strip(), int(port))
        except ValueError:
            raise LdctError(f"--forward {text!r}: expected AET@HOST:PORT, e.g. PACS@10.0.0.5:104") from None
        if not dest.aet or len(dest.aet) > 16 or not dest.host or not 0 < dest.port < 65536:
            raise LdctError(f"--forward {text!r}: AE title of 1-16 characters, a host and a port in 1-65535")
        return dest

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


@dataclass
class NodeConfig:
    aet: str = "LDCT"
    host: str = "0.0.0.0"
    port: int = 11112
    spool: Path = Path("ldct-spool")
    out: Path | None = None
    forward: Destination | None = None
    allow: list[str] = field(default_factory=list)
    idle: float = 10.0
    forward_other: bool = False

    def check(self) -> None:
        if not self.aet or len(self.aet) > 16:
            raise LdctError(f"--aet {self.aet!r}: an AE title of 1-16 characters")
        if not 0 < self.port < 65536:
            raise LdctError(f"--port {self.port}: must be in 1-65535")
        if self.out is None and self.forward is None:
            raise LdctError("give --forward AET@HOST:PORT and/or --out DIR: where derived series go")
        if not self.idle > 0:
            raise LdctError(f"--idle {self.idle}: must be positive seconds")
        for d in [self.spool] + ([self.out] if self.out else []):
            try:
                d.mkdir(parents=True, exist_ok=True)
                probe = d / f".ldct-write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise LdctError(f"cannot write here ({exc.strerror or exc})", d) from None


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:64] or "x"


def echo(dest: Destination, aet: str, timeout: float = 10.0) -> None:
    """C-ECHO ``dest``; LdctError when it does not answer with success."""
    from pynetdicom import AE

    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.aet)
    if not assoc.is_established:
        raise LdctError(f"destination {dest} did not accept an association (C-ECHO)")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or status.Status != 0x0000:
        raise LdctError(f"destination {dest} answered C-ECHO with {getattr(status, 'Status', 'nothing')}")


def send_files(files: list[Path], dest: Destination, aet: str) -> int:
    """C-STORE every file to ``dest`` in one association; returns the number stored, LdctError otherwise."""
    import pydicom
    from pynetdicom import AE

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    pairs = sorted({(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers})
    for sop, ts in pairs[:120]:
        ae.add_requested_context(sop, [ts, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.aet)
    if not assoc.is_established:
        raise LdctError(f"destination {dest} did not accept an association")
    stored = 0
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    try:
        for f in files:
            ds = pydicom.dcmread(f)
            key = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
            if key not in accepted:  # the peer takes no compressed data of this kind: send it uncompressed
                ds.decompress()
            try:
                status = assoc.send_c_store(ds)
            except ValueError as exc:  # no presentation context at all for this SOP class
                raise LdctError(f"destination {dest} accepts no way to store {f.name}: {exc}") from None
            if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise LdctError(f"destination {dest} refused {f.name} (status "
                                f"{hex(status.Status) if status else 'none: connection lost'})")
            stored += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return stored


class Node:
    """The spool, the receiver and the worker. ``process(input_dir, output_dir) -> slices`` denoises one
    received series folder into a derived series folder (``ldct serve`` passes ``denoise_path`` with the
    loaded model)."""

    def __init__(self, cfg: NodeConfig, process: Callable[[Path, Path], int]):
        self.cfg, self.process = cfg, process
        self.incoming, self.work, self.done = cfg.spool / "incoming", cfg.spool / "work", cfg.spool / "done"
        self.other = cfg.spool / "other"
        for d in (self.incoming, self.work, self.done, self.other):
            d.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._assoc: dict[int, dict[str, Any]] = {}
        self.server: Any = None
        self._worker: threading.Thread | None = None

    # --- receiving ---------------------------------------------------------------------------------------
    def _on_open(self, event: Any) -> None:
        a = event.assoc
        with self._lock:
            self._assoc[id(a)] = {"t0": time.perf_counter(), "n": 0, "skipped": 0, "failed": 0}

    def _on_close(self, event: Any) -> None:
        a = event.assoc
        with self._lock:
            info = self._assoc.pop(id(a), None)
        if info is None or not (info["n"] or info["skipped"] or info["failed"]):
            return
        who = f"{a.requestor.ae_title}@{a.requestor.address}:{a.requestor.port}"
        log.info("association from %s: %d instances stored, %d skipped, %d failed in %.1f s", who, info["n"],
                 info["skipped"], info["failed"], time.perf_counter() - info["t0"])

    def _count(self, event: Any, key: str) -> None:
        with self._lock:
            if id(event.assoc) in self._assoc:
                self._assoc[id(event.assoc)][key] += 1

    def handle_store(self, event: Any) -> int:
        """Write the instance to the spool (atomically), then acknowledge it."""
        who = event.assoc.requestor.ae_title
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            series = str(ds.get("SeriesInstanceUID", "") or "").strip()
            sop = str(ds.get("SOPInstanceUID", "") or "").strip()
            if not series or not sop:
                raise ValueError("no SeriesInstanceUID or SOPInstanceUID")
            is_ct = str(ds.get("Modality", "")).upper() == "CT" and str(ds.get("SOPClassUID", "")) in CT_IMAGE_SOPS \
                and "PixelData" in ds and "LOCALIZER" not in [str(v).upper() for v in ds.get("ImageType") or []]
            if not is_ct:
                self._count(event, "skipped")
                what = f"{ds.get('Modality', '?')} {ds.get('SOPClassUID', '?')}"
                if self.cfg.forward_other and self.cfg.forward is not None:
                    self._write(ds, self.other / _safe(series), sop)
                    log.info("not a CT image (%s) from %s: kept to forward untouched", what, who)
                else:
                    log.info("not a CT image (%s) from %s: skipped", what, who)
                return 0x0000
            self._write(ds, self.incoming / _safe(series), sop)
        except Exception as exc:  # a broken object never takes the node down
            self._count(event, "failed")
            log.warning("could not store an instance from %s: %s", who, str(exc)[:200])
            return 0xC210  # cannot understand
        self._count(event, "n")
        return 0x0000

    @staticmethod
    def _write(ds: Any, folder: Path, sop: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{_safe(sop)}.dcm"
        tmp = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        ds.save_as(tmp, enforce_file_format=True)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    # --- processing ------------------------------------------------------------------------------------------
    def _ready(self) -> list[Path]:
        now = time.time()
        out = []
        for d in sorted(p for p in self.incoming.iterdir() if p.is_dir()):
            files = [f for f in d.iterdir() if f.suffix == ".dcm"]
            if files and now - max(f.stat().st_mtime for f in files) >= self.cfg.idle:
                out.append(d)
        return out

    def _take(self, d: Path) -> Path:
        """incoming/<series> -> work/<series>[_k]/input (one rename)."""
        base = self.work / d.name
        k = 1
        while base.exists() or (self.done / base.name).exists():
            k += 1
            base = self.work / f"{d.name}_{k}"
        if k > 1:
            log.warning("late instances of series %s: processed as a separate batch (%s)", d.name, base.name)
        base.mkdir(parents=True)
        os.replace(d, base / "input")
        return base

    def _finish(self, job: Path) -> None:
        """work/<series>: denoise (once), copy to --out, send to --forward, then move to done/."""
        t0 = time.perf_counter()
        inp, out = job / "input", job / "output"
        if not out.is_dir():
            slices = self.process(inp, out)
        else:
            slices = len([f for f in out.iterdir() if f.suffix == ".dcm"])
        t_denoise = time.perf_counter() - t0
        files = sorted(f for f in out.iterdir() if f.suffix == ".dcm")
        went = []
        if self.cfg.out is not None:
            target = self._out_target(files[0])
            if not target.exists():
                tmp = target.with_name(f".{target.name}.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(out, tmp)
                os.replace(tmp, target)
            went.append(str(target))
        if self.cfg.forward is not None and not (job / "sent").exists():
            n = send_files(files, self.cfg.forward, self.cfg.aet)
            (job / "sent").write_text(str(n))
            went.append(f"{self.cfg.forward} ({n} sent)")
        elif self.cfg.forward is not None:
            went.append(f"{self.cfg.forward} (sent before a restart)")
        os.replace(job, self.done / job.name)
        log.info("series %s: %d slices denoised in %.1f s (read, denoise, write), delivered in %.1f s -> %s",
                 job.name, slices, t_denoise, time.perf_counter() - t0 - t_denoise, ", ".join(went))

    def _out_target(self, first: Path) -> Path:
        import pydicom

        ds = pydicom.dcmread(first, stop_before_pixels=True)
        study = _safe(f"{ds.get('PatientID', '') or 'patient'}_{str(ds.get('StudyInstanceUID', ''))[-12:]}")
        series = _safe(f"{int(ds.get('SeriesNumber', 0) or 0):04d}_{ds.get('SeriesDescription', '') or 'ldct'}"
                       f"_{str(ds.SeriesInstanceUID)[-8:]}")
        (self.cfg.out / study).mkdir(parents=True, exist_ok=True)
        return self.cfg.out / study / series

    def _forward_other(self) -> None:
        for d in sorted(p for p in self.other.iterdir() if p.is_dir()):
            files = sorted(f for f in d.iterdir() if f.suffix == ".dcm")
            if files and time.time() - max(f.stat().st_mtime for f in files) >= self.cfg.idle:
                n = send_files(files, self.cfg.forward, self.cfg.aet)
                shutil.rmtree(d)
                log.info("forwarded %d non-CT objects untouched to %s", n, self.cfg.forward)

    def step(self) -> int:
        """One pass: resume interrupted jobs, take complete series, process them. Returns jobs finished."""
        n = 0
        for d in self._ready():
            self._take(d)
        for job in sorted(p for p in self.work.iterdir() if p.is_dir()):
            if self._stop.is_set():
                break
            try:
                self._finish(job)
                n += 1
            except LdctError as exc:
                failed = self.cfg.spool / "failed"
                failed.mkdir(exist_ok=True)
                os.replace(job, failed / job.name)
                log.error("series %s failed: %s (kept in %s)", job.name, exc.message, failed / job.name)
            except OSError as exc:  # the destination or disk: retried on the next pass
                log.error("series %s: %s (will retry)", job.name, exc)
        if self.cfg.forward_other and self.cfg.forward is not None:
            try:
                self._forward_other()
            except LdctError as exc:
                log.error("forwarding non-CT objects: %s (will retry)", exc.message)
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # pragma: no cover - logged, the node keeps serving
                log.exception("worker error")
            self._stop.wait(min(1.0, self.cfg.idle / 2))

    # --- running ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.cfg.aet)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")
        if self.cfg.allow:
            ae.require_calling_aet = list(self.cfg.allow)
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_CONN_OPEN, self._on_open),
                    (evt.EVT_CONN_CLOSE, self._on_close),
                    (evt.EVT_REJECTED, lambda e: log.warning("association from %s@%s rejected (AE title not in "
                                                             "--allow)", e.assoc.requestor.ae_title,
                                                             e.assoc.requestor.address))]
        try:
            self.server = ae.start_server((self.cfg.host, self.cfg.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise LdctError(f"cannot listen on {self.cfg.host}:{self.cfg.port} ({exc.strerror or exc})") from None
        self._worker = threading.Thread(target=self._loop, name="ldct-serve-worker", daemon=True)
        self._worker.start()
        log.info("listening as %s on %s:%d (spool %s%s%s)", self.cfg.aet, self.cfg.host, self.cfg.port,
                 self.cfg.spool, f", out {self.cfg.out}" if self.cfg.out else "",
                 f", forward to {self.cfg.forward}" if self.cfg.forward else "")

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()
        if self._worker is not None:
            self._worker.join(timeout=60)


ALL_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",      # explicit VR little endian
    "1.2.840.10008.1.2",        # implicit VR little endian
    "1.2.840.10008.1.2.2",      # explicit VR big endian
    "1.2.840.10008.1.2.4.90",   # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",   # JPEG 2000
    "1.2.840.10008.1.2.4.70",   # JPEG lossless SV1
    "1.2.840.10008.1.2.4.57",   # JPEG lossless
    "1.2.840.10008.1.2.4.80",   # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",   # JPEG-LS near-lossless
    "1.2.840.10008.1.2.5",      # RLE lossless
    "1.2.840.10008.1.2.1.99",   # deflated explicit VR little endian
]
