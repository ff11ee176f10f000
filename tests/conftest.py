"""Shared test fixtures: real CT from ../shared/data (read-only; copy before changing anything)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LDCT_SHARED_DATA", ROOT.parent / "shared" / "data"))
SAMPLE_DICOM = ROOT / "src" / "ldct" / "sample_data" / "abdomen_dicom"

# Keep tests predictable on a 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set LDCT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_dicom() -> Path:
    return SAMPLE_DICOM
