"""Small copies of real CT for tests: slices of a DICOM series, and the real AAPM-Mayo quarter/full-dose pairs
(../shared/real_pairs/mayo, read-only)."""

from __future__ import annotations

from pathlib import Path


def copy_slices(series: Path, dst: Path, start: int, stop: int) -> Path:
    """``dst`` (created) holding copies of the files ``start:stop`` (sorted by name) of the series folder."""
    dst.mkdir(parents=True)
    for f in sorted(series.iterdir())[start:stop]:
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def copy_real_pairs(shared_data: Path, root: Path) -> Path:
    """``root/<patient>/{full,quarter}_3mm_sharp/`` with the first pair of each of L096, L143 and L286."""
    real = shared_data.parent / "real_pairs" / "mayo"
    for pid in ("L096", "L143", "L286"):
        for kind in ("full", "quarter"):
            src = real / pid / f"{kind}_3mm_sharp"
            dst = root / pid / src.name
            dst.mkdir(parents=True)
            f = sorted(src.iterdir())[0]
            (dst / f.name).write_bytes(f.read_bytes())
    return root
