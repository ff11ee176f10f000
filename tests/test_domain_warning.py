"""Denoising a scan far from the model's training data (pixel spacing, kernel) warns once, on stderr."""

from __future__ import annotations

import pydicom
import pytest

from ldct import Denoiser
from ldct.cli import main
from ldct.infer.domain import domain_warnings, kernel_sharpness, training_domain
from ldct.io import read_volume


def test_kernel_sharpness_across_vendors():
    assert kernel_sharpness("B30f") == 30 and kernel_sharpness("D45f") == 45
    assert kernel_sharpness("Br38f\\3") == 38 and kernel_sharpness("Hr64") == 64
    assert kernel_sharpness("STANDARD") == 35 and kernel_sharpness("BONE") == 65 and kernel_sharpness("STD+") == 35
    assert kernel_sharpness("sharp") == 45 and kernel_sharpness(None) is None and kernel_sharpness("XYZ") is None


def test_bundled_model_knows_its_training_domain():
    dom = training_domain(Denoiser.load("default").meta)
    assert dom["pixel_spacing_mm"] == [0.488, 3.0]
    assert dom["sharpness"] == [30.0, 45.0]  # L067 B30f/D45f ("smooth"/"sharp"), chest B40f, head STD+


def _slice(shared_data, folder, spacing=None, kernel=None):
    src = folder / "in"
    src.mkdir()
    ds = pydicom.dcmread(sorted((shared_data / "chest_dicom").iterdir())[12])
    if spacing:
        ds.PixelSpacing = [spacing, spacing]
    if kernel:
        ds.ConvolutionKernel = kernel
    ds.save_as(src / "s.dcm")
    return src


@pytest.mark.parametrize("spacing,kernel,expect", [
    (None, None, []),  # the real chest slice (0.65 mm, B40f): inside the training data
    (0.2, None, ["pixel spacing 0.2 mm"]),
    (5.0, None, ["pixel spacing 5 mm"]),
    (None, "B70f", ["kernel B70f is much sharper"]),
    (None, "B10f", ["kernel B10f is much smoother"]),
])
def test_scan_far_from_training_data_is_flagged(shared_data, tmp_path, spacing, kernel, expect):
    vol = read_volume(_slice(shared_data, tmp_path, spacing, kernel))
    got = domain_warnings(vol, Denoiser.load("default").meta)
    assert len(got) == len(expect), got
    for w, e in zip(got, expect, strict=True):
        assert e in w


def test_denoise_prints_each_warning_once(shared_data, tmp_path, capfd):
    src = _slice(shared_data, tmp_path, 0.2, "B70f")
    assert main(["denoise", str(src), "-o", str(tmp_path / "out.npy")]) == 0
    err = capfd.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("ldct: warning:")]
    assert len(warnings) == 2 and "pixel spacing 0.2 mm" in warnings[0] and "B70f" in warnings[1], err
