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
# `ldct denoise` runs on ONNX Runtime by default on the CPU, after exporting each new model once (~20 s);
# most tests train throw-away models, so they run on PyTorch. tests/test_onnx_backend.py tests the default.
os.environ.setdefault("LDCT_BACKEND", "torch")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set LDCT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_dicom() -> Path:
    return SAMPLE_DICOM
