"""filter="auto": the simulated noise texture follows the scan's own reconstruction kernel."""

from __future__ import annotations

import numpy as np
import pytest

from ldct.simulate import calibrate_i0, default_geometry, simulate_doses


def _mayo(shared_data, name: str) -> np.ndarray:
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / name, dtype="<u2").reshape(512, 512)
    return (raw.astype(np.float32) - 1024.0)[None]


@pytest.fixture(scope="module")
def calibrations(shared_data):
    geom = default_geometry((512, 512), 0.7)
    out = {}
    for kernel, name in (("sharp", "L067_FD_3mm_sharp_000189.raw"), ("smooth", "L067_FD_3mm_smooth_0190.raw")):
        out[kernel] = calibrate_i0(_mayo(shared_data, name), 0.7, geom, filter="auto", seed=0)
    return out


def test_auto_filter_matches_kernel(calibrations):
    assert calibrations["sharp"].filter == "ram-lak"
    assert calibrations["smooth"].filter == "hann"
    # the chosen filter's simulated texture is close to the scan's own
    for c in calibrations.values():
        assert abs(c.texture_sim - c.texture_scan) < 0.08


def test_auto_filter_gives_consistent_flux_across_kernels(calibrations):
    # same patient, same protocol, two kernels: one physical flux explains both noise levels
    ratio = calibrations["sharp"].i0 / calibrations["smooth"].i0
    assert 0.5 < ratio < 2.0, ratio


def test_simulate_records_resolved_filter(shared_data):
    hu = _mayo(shared_data, "L067_FD_3mm_sharp_000189.raw")
    res = simulate_doses(hu, [0.25], pixel_spacing_mm=0.7, filter="auto", seed=1)
    assert res.parameters["filter"] == "ram-lak"
    assert res.parameters["i0_source"] == "calibrated"
