"""`ldct denoise` end to end: DICOM/NIfTI/npy in -> same kind out, and every bad input -> one line, exit 2."""

from __future__ import annotations

import errno
import hashlib
import json
import re
import resource
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers_denoise import correlated_noise, mayo_slice, trained_model
from PIL import Image

from ldct.cli import main
from ldct.io import read_volume


@pytest.fixture(scope="module")
def model_dir(shared_data, tmp_path_factory) -> Path:
    return trained_model(shared_data, tmp_path_factory.getbasetemp())


@pytest.fixture
def series3(sample_dicom, tmp_path) -> Path:
    """Three consecutive slices of the bundled sample series (real JPEG 2000 DICOM) in a fresh folder."""
    d = tmp_path / "in_series"
    d.mkdir()
    for f in sorted(sample_dicom.iterdir())[8:11]:
        shutil.copy2(f, d / f.name)
    return d


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("ldct: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _noise(out: str) -> tuple[float, float]:
    m = re.search(r"noise std in body soft tissue: ([\d.]+) HU before, ([\d.]+) HU after", out)
    assert m, out
    return float(m.group(1)), float(m.group(2))


def test_dicom_series_in_dicom_series_out(model_dir, series3, tmp_path, capsys):
    before = _digest(series3)
    out, png = tmp_path / "denoised", tmp_path / "preview.png"
    rc = main(["denoise", str(series3), "-o", str(out), "--model", str(model_dir), "--device", "cpu",
               "--batch-size", "2", "--preview", str(png)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert _digest(series3) == before  # input untouched
    assert "3 slices" in cap.out and "slices/s" in cap.out and f"preview: {png}" in cap.out
    assert "not dose-conditioned" in cap.err
    nb, na = _noise(cap.out)
    assert na < 0.8 * nb

    src, res = read_volume(series3), read_volume(out)
    assert res.shape == src.shape
    np.testing.assert_allclose(res.positions, src.positions, atol=1e-3)
    np.testing.assert_allclose(res.orientation, src.orientation, atol=1e-6)
    np.testing.assert_allclose(res.spacing, src.spacing, atol=1e-4)
    diff = res.data - src.data
    assert 2.0 < np.abs(diff).mean() < 60.0  # denoised, not replaced
    body = src.data > -500
    assert abs(float(res.data[body].mean() - src.data[body].mean())) < 10.0  # HU level kept

    files_in = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(series3.iterdir())]
    files_out = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(out.iterdir())]
    assert len(files_out) == 3
    assert {d.SeriesInstanceUID for d in files_out} & {d.SeriesInstanceUID for d in files_in} == set()
    assert len({d.SeriesInstanceUID for d in files_out}) == 1
    sops = {d.SOPInstanceUID for d in files_out}
    assert len(sops) == 3 and not sops & {d.SOPInstanceUID for d in files_in}
    for k in ("PatientID", "StudyInstanceUID", "StudyDate", "FrameOfReferenceUID"):
        given = str(getattr(files_in[0], k, "") or "")  # the sample is anonymised: some are empty
        assert {str(getattr(d, k)) for d in files_out} == ({given} if given else {str(getattr(files_out[0], k))})
        assert str(getattr(files_out[0], k)) or not k.endswith("UID")  # empty type-1 UIDs get new ones
    assert all(model_dir.name in str(d.SeriesDescription) for d in files_out)
    assert files_out[0].Modality == "CT"

    img = Image.open(png)
    assert img.size == (2 * 512 + 8, 512)
    left, right = np.asarray(img.convert("L"))[:, :512], np.asarray(img.convert("L"))[:, 520:]
    assert left.std() > 20 and np.abs(left.astype(int) - right).mean() > 1.0


def test_patient_and_study_are_kept(model_dir, shared_data, tmp_path, capsys):
    src = tmp_path / "chest"
    src.mkdir()
    for f in sorted((shared_data / "chest_dicom").iterdir())[10:12]:
        shutil.copy2(f, src / f.name)
    assert main(["denoise", str(src), "-o", str(tmp_path / "out"), "--model", str(model_dir)]) == 0
    a = pydicom.dcmread(min(src.iterdir()), stop_before_pixels=True)
    outs = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted((tmp_path / "out").iterdir())]
    assert len(outs) == 2
    for k in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID", "StudyDate"):
        assert {str(getattr(d, k)) for d in outs} == {str(getattr(a, k))}, k
    assert all(d.SeriesInstanceUID != a.SeriesInstanceUID for d in outs)
    capsys.readouterr()


def test_npy_slice_is_denoised(model_dir, shared_data, tmp_path, capsys):
    nd = mayo_slice(shared_data, "L067_FD_3mm_smooth_0190.raw")[96:416, 96:416]
    ld = nd + correlated_noise(nd.shape, 40.0, np.random.default_rng(5))
    np.save(tmp_path / "ld.npy", ld.astype(np.float32))
    assert main(["denoise", str(tmp_path / "ld.npy"), "-o", str(tmp_path / "out.npy"),
                 "--model", str(model_dir), "--tile", "128", "--overlap", "32"]) == 0
    out = np.load(tmp_path / "out.npy")
    assert out.shape == nd.shape and out.dtype == np.float32
    tissue = (nd > -100) & (nd < 150)
    rmse = lambda a: float(np.sqrt(np.mean((a - nd)[tissue] ** 2)))
    assert rmse(out) < 0.8 * rmse(ld)
    capsys.readouterr()


def test_nifti_volume_keeps_its_affine(model_dir, shared_data, tmp_path, capsys):
    src = tmp_path / "abdomen_part.nii.gz"  # 8 slices of the real volume (slicer keeps the affine right)
    nib.save(nib.load(shared_data / "volumes" / "abdomen_3mm.nii.gz").slicer[:, :, 50:58], src)
    out = tmp_path / "den.nii.gz"
    assert main(["denoise", str(src), "-o", str(out), "--model", str(model_dir)]) == 0
    a, b = nib.load(src), nib.load(out)
    assert a.shape == b.shape
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-4)
    da, db = a.get_fdata(dtype=np.float32), b.get_fdata(dtype=np.float32)
    assert 0.5 < np.abs(da - db).mean() < 60.0
    assert "wrote" in capsys.readouterr().out


def test_existing_output_needs_overwrite(model_dir, tmp_path, capsys):
    np.save(tmp_path / "in.npy", np.full((40, 40), 30.0, np.float32))
    (tmp_path / "out.npy").write_bytes(b"keep")
    assert main(["denoise", str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy"), "--model", str(model_dir)]) == 2
    assert "--overwrite" in _one_error_line(capsys.readouterr().err)
    assert (tmp_path / "out.npy").read_bytes() == b"keep"
    assert main(["denoise", str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy"), "--model", str(model_dir),
                 "--overwrite"]) == 0
    assert np.load(tmp_path / "out.npy").shape == (40, 40)


@pytest.mark.parametrize("dose", ["0", "1.5", "-0.2", "nan"])
def test_dose_out_of_range(model_dir, tmp_path, dose, capsys):
    np.save(tmp_path / "in.npy", np.zeros((32, 32), np.float32))
    assert main(["denoise", str(tmp_path / "in.npy"), "-o", str(tmp_path / "o.npy"), "--model", str(model_dir),
                 "--dose", dose]) == 2
    assert "(0, 1]" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.npy").exists()


def test_output_inside_the_input_series(model_dir, series3, capsys):
    before = _digest(series3)
    assert main(["denoise", str(series3), "-o", str(series3 / "denoised"), "--model", str(model_dir)]) == 2
    assert "inside the input" in _one_error_line(capsys.readouterr().err)
    assert main(["denoise", str(series3), "-o", str(series3), "--model", str(model_dir), "--overwrite"]) == 2
    capsys.readouterr()
    assert _digest(series3) == before


def test_non_ct_series_is_refused(model_dir, series3, tmp_path, capsys):
    mr = tmp_path / "mr"
    mr.mkdir()
    for f in sorted(series3.iterdir()):
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(mr / f.name)
    assert main(["denoise", str(mr), "-o", str(tmp_path / "out"), "--model", str(model_dir)]) == 2
    assert "MR" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "photo.png")
    assert main(["denoise", str(tmp_path / "photo.png"), "-o", str(tmp_path / "o.npy"),
                 "--model", str(model_dir)]) == 2
    capsys.readouterr()


def _no_leftovers(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p.name for p in parent.iterdir() if name in p.name], list(parent.iterdir())


def test_full_disk_real_write_failure_leaves_nothing(model_dir, series3, tmp_path, capsys):
    """The kernel refuses writes beyond RLIMIT_FSIZE (EFBIG) - a real failing write, like a full disk."""
    before = _digest(series3)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # a 512x512 slice needs ~0.5 MB
    try:
        rc_dicom = main(["denoise", str(series3), "-o", str(tmp_path / "den"), "--model", str(model_dir),
                        "--no-compress"])  # uncompressed: ~0.5 MB per slice
        rc_npy = main(["denoise", str(series3), "-o", str(tmp_path / "den.npy"), "--model", str(model_dir)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert rc_dicom == 2 and rc_npy == 2
    err = capsys.readouterr().err
    assert err.count("ldct: error:") == 2 and "could not write output" in err and "Traceback" not in err
    _no_leftovers(tmp_path, "den")
    assert _digest(series3) == before


def test_disk_full_midway_removes_the_partial_series(model_dir, series3, tmp_path, monkeypatch, capsys):
    """ENOSPC on the 3rd file: the two files already written are removed with their folder."""
    real_save = pydicom.dataset.Dataset.save_as
    written: list[Path] = []

    def save_as(self, filename, *args, **kwargs):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        real_save(self, filename, *args, **kwargs)
        written.append(Path(filename))

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", save_as)
    assert main(["denoise", str(series3), "-o", str(tmp_path / "den"), "--model", str(model_dir)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line
    assert len(written) == 2 and not any(p.exists() for p in written)
    _no_leftovers(tmp_path, "den")


def test_bad_tiling_and_unknown_model(model_dir, tmp_path, capsys):
    np.save(tmp_path / "in.npy", np.zeros((64, 64), np.float32))
    assert main(["denoise", str(tmp_path / "in.npy"), "-o", str(tmp_path / "o.npy"), "--model", str(model_dir),
                 "--tile", "64", "--overlap", "40"]) == 2
    assert "overlap" in _one_error_line(capsys.readouterr().err)
    assert main(["denoise", str(tmp_path / "in.npy"), "-o", str(tmp_path / "o.npy"), "--model", "nosuchmodel"]) == 2
    assert "unknown model" in _one_error_line(capsys.readouterr().err)
    assert main(["denoise", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "o.npy")]) == 2
    assert "input not found" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.npy").exists()


def _dose_model(tmp_path: Path) -> Path:
    """A dose-conditioned encoder-decoder (tiny NAFNet family) with fixed random dose heads."""
    from ldct.models.files import MODEL_KIND, save_weights
    from ldct.models.specs import build_network

    torch.manual_seed(0)
    spec = {"name": "encdec", "dose_conditioned": True, "dose_hidden": 8,
            "family": {"name": "nafnet", "width": 4, "enc_blk_nums": [1], "middle_blk_num": 1,
                       "dec_blk_nums": [1]}}
    net = build_network(spec)
    with torch.no_grad():  # move away from the identity/zero initialisation, reproducibly
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for head in net.dose_mlp.heads:
            head.weight.normal_(0, 0.5)
    meta = {"kind": MODEL_KIND, "format": 1, "method": "distill", "inference_net": "net",
            "network": net.ldct_spec, "dose_conditioned": True, "scale": 1, "hu_window": [-1000.0, 1000.0],
            "doses": [0.1, 0.25, 0.5], "channels": 1}
    d = tmp_path / "dose_model"
    d.mkdir()
    save_weights(d / "weights.safetensors", {f"net.{k}": v for k, v in net.state_dict().items()}, meta)
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_dose_conditioned_model_needs_and_uses_the_dose(shared_data, tmp_path, capsys):
    model = _dose_model(tmp_path)
    x = mayo_slice(shared_data, "L067_FD_3mm_smooth_0040.raw")[128:256, 128:256]
    np.save(tmp_path / "in.npy", x)
    inp = str(tmp_path / "in.npy")
    assert main(["denoise", inp, "-o", str(tmp_path / "a.npy"), "--model", str(model)]) == 2
    assert "--dose" in _one_error_line(capsys.readouterr().err)
    assert main(["denoise", inp, "-o", str(tmp_path / "a.npy"), "--model", str(model), "--dose", "0.25"]) == 0
    assert "dose 0.25 from --dose" in capsys.readouterr().err
    assert main(["denoise", inp, "-o", str(tmp_path / "b.npy"), "--model", str(model), "--dose", "0.5"]) == 0
    assert np.abs(np.load(tmp_path / "a.npy") - np.load(tmp_path / "b.npy")).max() > 1.0
    # estimated from image noise against a stated normal-dose noise level
    assert main(["denoise", inp, "-o", str(tmp_path / "c.npy"), "--model", str(model),
                 "--reference-noise", "5"]) == 0
    assert "from image noise" in capsys.readouterr().err
