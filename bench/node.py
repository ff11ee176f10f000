"""``ldct serve`` end to end on this machine: dcmtk's storescu as the scanner, Orthanc as the PACS.

    python bench/node.py [--series 3] [--slices 20] [--idle 2]

Sends ``--series`` CT series of ``--slices`` slices (the bundled sample with fresh UIDs), one after the
other, to a node forwarding to Orthanc, and prints per series: sending time, latency (end of sending ->
all derived instances in Orthanc), and the node's own log line (denoising vs sending); then series/min.
The latency includes the ``--idle`` wait that tells the node a series is complete.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers_dicom_net import Orthanc, ct_series, free_port, start_serve, stop, storescu, wait_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=3)
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--backend", default="auto", help="auto (ONNX Runtime on the CPU), torch or onnxruntime")
    args = ap.parse_args()
    sample = ROOT / "src" / "ldct" / "sample_data" / "abdomen_dicom"
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        pacs = Orthanc(tmp / "orthanc")
        port = free_port()
        log = tmp / "serve.log"
        proc = start_serve(["--forward", f"ORTHANC@127.0.0.1:{pacs.dicom_port}", "--spool", str(tmp / "spool"),
                            "--idle", str(args.idle)], log, port, backend=args.backend)
        try:
            print(f"| series | slices | send s | latency s (incl. {args.idle:g} s idle) |\n|---|---|---|---|")
            t_all = time.perf_counter()
            for k in range(args.series):
                d = tmp / f"s{k}"
                ct_series(sample, d, first=0, n=args.slices, number=100 + k)
                t0 = time.perf_counter()
                assert storescu(d, port).returncode == 0
                t1 = time.perf_counter()

                def arrived(k=k):
                    for s in pacs.series():
                        tags = s["MainDicomTags"]
                        if tags.get("SeriesNumber") == str(5100 + k) and len(s["Instances"]) == args.slices:
                            return True
                    return False

                assert wait_for(arrived, 600, 0.2), log.read_text()
                t2 = time.perf_counter()
                print(f"| {k + 1} | {args.slices} | {t1 - t0:.1f} | {t2 - t1:.1f} |", flush=True)
            total = time.perf_counter() - t_all
            print(f"\n{args.series} series in {total:.0f} s: {60 * args.series / total:.1f} series/min "
                  f"({60 * args.series * args.slices / total:.0f} slices/min), sequential senders")
            print("\nthe node's lines:")
            for line in log.read_text().splitlines():
                if "series " in line or "association" in line:
                    print("  " + line)
        finally:
            stop(proc)
            pacs.close()


if __name__ == "__main__":
    main()
