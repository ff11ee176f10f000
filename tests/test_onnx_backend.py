"""ONNX export and the ONNX Runtime backend (the default of `ldct denoise` on the CPU): same HU as PyTorch,
exported once into the cache, metadata carried in the .onnx file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_pairs import copy_slices

from ldct.cli import main
from ldct.denoiser import Denoiser


def _two_slices(sample_dicom, root):
    return copy_slices(sample_dicom, root, 8, 10)


def test_export_onnx_matches_pytorch_at_any_size(tmp_path, capsys):
    import onnx

    from ldct.onnx_export import OrtNetwork

    out = tmp_path / "default.onnx"
    assert main(["export", "default", "-o", str(out)]) == 0
    assert "matches PyTorch" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    meta = json.loads(props["ldct_meta"])
    assert meta["hu_window"] == [-1000.0, 1000.0] and meta["channels"] == 1 and meta["size_multiple"] == 16
    den = Denoiser.load("default")
    ort = OrtNetwork(out, multiple=(meta["size_multiple"], meta["min_size"]))
    for shape in [(1, 1, 128, 128), (2, 1, 100, 77)]:  # a multiple of 16, and not
        x = torch.rand(*shape) * 2 - 1
        with torch.no_grad():
            want = den.net(x)
        got = ort(x)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) < 1e-4
    assert main(["export", "default", "-o", str(out)]) == 2  # exists: refused without --overwrite


def test_denoise_auto_backend_is_onnxruntime_on_cpu_and_matches_torch(sample_dicom, tmp_path, monkeypatch, capsys):
    scan = _two_slices(sample_dicom, tmp_path / "scan")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LDCT_BACKEND", raising=False)
    assert main(["denoise", str(scan), "-o", str(tmp_path / "ort.npy"), "--device", "cpu"]) == 0
    assert "(onnxruntime)" in capsys.readouterr().err
    cached = list((tmp_path / "cache" / "ldct" / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert main(["denoise", str(scan), "-o", str(tmp_path / "ort2.npy"), "--device", "cpu"]) == 0
    assert cached[0].stat().st_mtime_ns == stamp  # exported once, then reused
    cached[0].write_bytes(b"not an onnx model")  # a damaged (or foreign) cache file is checked and redone
    assert main(["denoise", str(scan), "-o", str(tmp_path / "ort3.npy"), "--device", "cpu"]) == 0
    assert "(onnxruntime)" in capsys.readouterr().err and cached[0].stat().st_size > 100_000
    assert main(["denoise", str(scan), "-o", str(tmp_path / "pt.npy"), "--backend", "torch"]) == 0
    assert "(torch)" in capsys.readouterr().err
    ort, pt = np.load(tmp_path / "ort.npy"), np.load(tmp_path / "pt.npy")
    assert ort.shape == pt.shape == (2, 512, 512)
    assert float(np.abs(ort - pt).max()) < 0.05  # HU
    assert float(np.abs(ort - np.load(tmp_path / "ort2.npy")).max()) == 0.0


def test_unwritable_cache_falls_back_to_torch_with_a_note(sample_dicom, tmp_path, monkeypatch, capsys):
    scan = _two_slices(sample_dicom, tmp_path / "scan")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.delenv("LDCT_BACKEND", raising=False)
    assert main(["denoise", str(scan), "-o", str(tmp_path / "a.npy"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "note: running on PyTorch" in err and "(torch)" in err
    # asked for by name, the same failure is the answer: one line, exit 2
    assert main(["denoise", str(scan), "-o", str(tmp_path / "b.npy"), "--backend", "onnxruntime"]) == 2
    assert "ONNX cache" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["tensorflow"])
def test_unknown_backend_is_a_usage_error(sample_dicom, tmp_path, backend, capsys):
    assert main(["denoise", str(sample_dicom), "-o", str(tmp_path / "x.npy"), "--backend", backend]) == 2
    assert "--backend" in capsys.readouterr().err
