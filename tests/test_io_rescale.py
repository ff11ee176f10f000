"""RescaleSlope/Intercept are applied per slice (real test data all has slope 1: a reader ignoring the
slope passed every other test)."""

from __future__ import annotations

import numpy as np
import pydicom

from ldct.io import read_volume


def test_rescale_slope_and_intercept_give_the_same_hu(shared_data, tmp_path):
    files = sorted((shared_data / "chest_dicom").iterdir())[10:13]
    ref_dir, alt_dir = tmp_path / "ref", tmp_path / "alt"
    ref_dir.mkdir()
    alt_dir.mkdir()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.save_as(ref_dir / f.name)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slope, intercept = (2.0, -2048.0) if k != 1 else (0.5, -3000.0)  # a slope that varies per slice
        stored = np.round((hu - intercept) / slope)
        assert stored.min() >= 0 and stored.max() < 2**16
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 16, 15
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.save_as(alt_dir / f.name)
    ref, alt = read_volume(ref_dir), read_volume(alt_dir)
    assert ref.data.shape == alt.data.shape == (3, 512, 512)
    err = np.abs(ref.data - alt.data)
    assert err[[0, 2]].max() <= 1.0  # slope 2: stored values rounded to 2 HU steps
    assert err[1].max() <= 0.25
    assert np.isclose(alt.data.mean(), ref.data.mean(), atol=0.5)
