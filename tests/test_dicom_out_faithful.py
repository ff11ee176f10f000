"""DICOM out that a physicist accepts (issue 13, section 4), checked on the real chest series.

Per-slice acquisition attributes (tube current modulation, window presets, ...) and de-identification
attributes survive, InstanceNumber runs the source's way, every derived series of a run has its own
SeriesNumber, SeriesDescription fits 64 characters at word boundaries, compressed input gives
losslessly compressed output, a simulated low dose states its own dose, and non-finite geometry is
refused. Headers are read back with dcmtk's dcmdump as an independent reader where it matters.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from ldct.cli import main
from ldct.dose import estimate_dose
from ldct.errors import LdctError
from ldct.io import read_volume, write_volume
from ldct.io.dicom_attrs import series_description
from ldct.io.dicom_write import choose_transfer_syntax
from ldct.simulate.scan import simulate_volume

# slices 11..14 of the chest series: tube current modulation gives 181, 184, 194, 205 mA
CHEST_SLICES = slice(10, 14)


def copy_slices(src: Path, dst: Path, part: slice) -> Path:
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir())[part]:
        shutil.copy2(f, dst / f.name)
    return dst


@pytest.fixture
def chest4(shared_data, tmp_path) -> Path:
    return copy_slices(shared_data / "chest_dicom", tmp_path / "chest4", CHEST_SLICES)


@pytest.fixture
def chest2(shared_data, tmp_path) -> Path:
    return copy_slices(shared_data / "chest_dicom", tmp_path / "chest2", slice(12, 14))


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def dcmdump(path: Path, *tags: str) -> dict[str, str]:
    """Values of ``tags`` ("gggg,eeee") as dcmtk's dcmdump prints them (multi-values joined by \\)."""
    exe = shutil.which("dcmdump")
    if exe is None:  # CI installs dcmtk (scripts/test.sh); missing means a broken setup
        pytest.fail("dcmdump not found: install the Debian package dcmtk")
    args = [exe, "-q", "+L"]
    for t in tags:
        args += ["+P", t]
    res = subprocess.run([*args, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    out = {}
    for line in res.stdout.splitlines():
        m = re.match(r"\s*\(([0-9a-f]{4},[0-9a-f]{4})\) \w\w (?:\[(.*?)\]|(\S+))", line)
        if m:
            out.setdefault(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))
    return out


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]


def test_per_slice_attributes_and_deidentification_survive(chest4, tmp_path):
    before = digest(chest4)
    vol = read_volume(chest4)
    out = write_volume(vol, tmp_path / "copy", source=vol, description="ldct test copy")
    src = {h.SOPInstanceUID: (f, h) for f, h in zip(sorted(chest4.iterdir()), headers(chest4))}
    currents = set()
    for f in sorted(out.iterdir()):
        d = pydicom.dcmread(f, stop_before_pixels=True)
        sf, s = src[d.SourceImageSequence[0].ReferencedSOPInstanceUID]  # the slice it came from
        for kw in ("XRayTubeCurrent", "Exposure", "ExposureTime", "KVP", "TableHeight", "AcquisitionNumber",
                   "AcquisitionTime", "ConvolutionKernel", "ReconstructionDiameter", "InstanceNumber"):
            assert str(d[kw].value) == str(s[kw].value), kw
        assert [float(v) for v in d.WindowCenter] == [float(v) for v in s.WindowCenter] == [40.0, -600.0]
        assert [float(v) for v in d.WindowWidth] == [float(v) for v in s.WindowWidth] == [350.0, 1200.0]
        assert list(d.WindowCenterWidthExplanation) == ["WINDOW1", "WINDOW2"]
        np.testing.assert_allclose([float(v) for v in d.ImagePositionPatient],
                                   [float(v) for v in s.ImagePositionPatient], atol=1e-6)
        assert float(d.SliceLocation) == pytest.approx(float(s.SliceLocation))
        # de-identification stays stated
        assert d.PatientIdentityRemoved == "YES"
        assert d.DeidentificationMethod == s.DeidentificationMethod
        assert [i.CodeValue for i in d.DeidentificationMethodCodeSequence] == [
            i.CodeValue for i in s.DeidentificationMethodCodeSequence
        ]
        assert d.LongitudinalTemporalInformationModified == "MODIFIED"
        assert d.ContentDate == s.ContentDate  # shifted dates kept, not today's real date
        # the same, read by dcmtk
        tags = ("0018,1151", "0018,1152", "0028,1050", "0028,1051", "0012,0062", "0012,0063", "0020,0013")
        assert dcmdump(f, *tags) == dcmdump(sf, *tags)
        currents.add(int(d.XRayTubeCurrent))
    assert currents == {181, 184, 194, 205}  # each slice its own current, not the series mean
    assert digest(chest4) == before


def test_instance_numbers_run_the_source_way(chest4, tmp_path):
    vol = read_volume(chest4)

    def z_by_instance(folder: Path) -> list[float]:
        pairs = []
        for f in sorted(folder.iterdir()):
            v = dcmdump(f, "0020,0013", "0020,0032")
            pairs.append((int(v["0020,0013"]), float(v["0020,0032"].split("\\")[2])))
        return [z for _, z in sorted(pairs)]

    src_z = z_by_instance(chest4)
    assert np.all(np.diff(src_z) < 0)  # the source counts from head to feet
    out = write_volume(vol, tmp_path / "copy", source=vol)
    assert z_by_instance(out) == src_z  # same numbers on the same slices
    names = [f.name for f in sorted(out.iterdir())]
    numbers = [int(pydicom.dcmread(out / n, stop_before_pixels=True).InstanceNumber) for n in names]
    assert numbers == [11, 12, 13, 14]  # file names follow the instance numbers

    # slices that no longer map one to one onto source slices are numbered 1..n, still head to feet
    part = vol.with_data(vol.data[:3])
    part.positions = vol.positions[:3]
    part.headers = None
    out2 = write_volume(part, tmp_path / "part", source=vol)
    z2 = z_by_instance(out2)
    assert len(z2) == 3 and np.all(np.diff(z2) < 0)
    assert sorted(int(h.InstanceNumber) for h in headers(out2)) == [1, 2, 3]


def test_one_run_gives_distinct_series_numbers_and_whole_word_descriptions(chest2, tmp_path, capsys):
    sim, den = tmp_path / "sim", tmp_path / "den"
    rc = main(["simulate", str(chest2), "--dose", "0.25", "0.1", "-o", str(sim), "--mode", "gaussian",
               "--sigma", "12", "--seed", "1"])
    assert rc == 0, capsys.readouterr().err
    rc = main(["denoise", str(sim / "ld_0.25"), "-o", str(den), "--device", "cpu", "--batch-size", "2"])
    assert rc == 0, capsys.readouterr().err
    folders = {"source": chest2, "nd": sim / "nd", "ld_0.25": sim / "ld_0.25", "ld_0.1": sim / "ld_0.1",
               "denoised": den}
    numbers = {}
    for name, folder in folders.items():
        vals = {dcmdump(f, "0020,0011")["0020,0011"] for f in sorted(folder.iterdir())}
        assert len(vals) == 1, (name, vals)  # one number per series
        numbers[name] = int(vals.pop())
    assert len(set(numbers.values())) == len(numbers), numbers
    assert numbers["source"] == 3 and numbers["ld_0.25"] == 3253 and numbers["ld_0.1"] == 3103

    src_desc = headers(chest2)[0].SeriesDescription
    assert src_desc == "ThoraxRoutine  8.0.0  B40f"
    descs = {name: dcmdump(min(folders[name].iterdir()), "0008,103e")["0008,103e"] for name in folders}
    assert descs["ld_0.25"] == "ldct simulated 25% dose (gaussian) (ThoraxRoutine 8.0.0 B40f)"
    assert descs["nd"] == "ldct normal-dose reference (ThoraxRoutine 8.0.0 B40f)"
    assert descs["denoised"].startswith("ldct denoised (default) (ldct simulated 25% dose")
    words = set(re.sub(r"[()]", " ", " ".join(descs.values())).split()) - {"ldct", "denoised", "default"}
    full_words = set(re.sub(r"[()]", " ", f"{src_desc} ldct simulated 25% 10% dose gaussian normal-dose "
                                         "reference").split())
    assert words <= full_words  # no word cut in half
    for name, d in descs.items():
        assert len(d) <= 64 and d.count("(") == d.count(")"), (name, d)


def test_series_description_fits_at_word_boundaries():
    assert series_description("ldct x", "ThoraxRoutine  8.0.0  B40f") == "ldct x (ThoraxRoutine 8.0.0 B40f)"
    long_src = "Thorax Routine with contrast enhanced arterial phase 1.0 mm B40f kernel reconstruction"
    what = "ldct simulated 25% dose (projection)"
    d = series_description(what, long_src)
    inner = d[len(what) + 2 : -1]
    assert len(d) <= 64 and d == f"{what} ({inner})" and inner.startswith("Thorax Routine")
    assert long_src.startswith(inner) and long_src[len(inner)] == " "  # cut between two words
    long_what = "ldct denoised (" + " ".join(["averyveryverylongmodelname"] * 3) + ")"
    assert series_description(long_what, "src") == "ldct denoised (averyveryverylongmodelname)"
    assert series_description("a\\b", "") == "a/b"  # backslash would split the LO value in two


def test_compression_follows_the_input_or_the_option(chest2, shared_data, tmp_path, capsys):
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    assert main(["convert", str(chest2), str(plain)]) == 0
    assert main(["convert", str(chest2), str(packed), "--compress"]) == 0
    capsys.readouterr()
    assert dcmdump(min(plain.iterdir()), "0002,0010")["0002,0010"] == "=LittleEndianExplicit"
    assert dcmdump(min(packed.iterdir()), "0002,0010")["0002,0010"] == "=JPEG2000LosslessOnly"
    np.testing.assert_array_equal(read_volume(packed).data, read_volume(chest2).data)  # lossless
    assert size(packed) < 0.7 * size(plain)

    # JPEG 2000 input (abdomen): JPEG 2000 lossless out, about the input's size, same HU
    abd = copy_slices(shared_data / "abdomen_dicom", tmp_path / "abd", slice(0, 4))
    out = tmp_path / "abd_out"
    assert main(["convert", str(abd), str(out)]) == 0
    assert pydicom.dcmread(min(out.iterdir())).file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert size(out) <= 1.1 * size(abd)
    np.testing.assert_array_equal(read_volume(out).data, read_volume(abd).data)
    out2 = tmp_path / "abd_plain"
    assert main(["convert", str(abd), str(out2), "--no-compress"]) == 0
    assert pydicom.dcmread(min(out2.iterdir())).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian

    # RLE input keeps RLE (pydicom encodes it natively)
    rle = tmp_path / "rle"
    rle.mkdir()
    for f in sorted(chest2.iterdir()):
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(rle / f.name)
    vol = read_volume(rle)
    out3 = write_volume(vol, tmp_path / "rle_out", source=vol)
    assert pydicom.dcmread(min(out3.iterdir())).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_volume(out3).data, vol.data)


def test_transfer_syntax_choice():
    assert choose_transfer_syntax(ExplicitVRLittleEndian) == ExplicitVRLittleEndian
    assert choose_transfer_syntax(None, True) == JPEG2000Lossless
    assert choose_transfer_syntax(JPEG2000Lossless, False) == ExplicitVRLittleEndian
    assert choose_transfer_syntax(JPEGBaseline8Bit) == JPEG2000Lossless  # never re-encoded lossy
    assert choose_transfer_syntax(DeflatedExplicitVRLittleEndian) == DeflatedExplicitVRLittleEndian


def test_simulated_low_dose_states_its_own_dose(chest2, tmp_path, capsys):
    for k, f in enumerate(sorted(chest2.iterdir())):  # give the copies a CTDIvol, as modern scanners write
        ds = pydicom.dcmread(f)
        ds.CTDIvol = 9.5 + k
        ds.save_as(f)
    before = digest(chest2)
    sim = tmp_path / "sim"
    rc = main(["simulate", str(chest2), "--dose", "0.25", "-o", str(sim), "--mode", "gaussian",
               "--sigma", "12", "--seed", "2"])
    assert rc == 0, capsys.readouterr().err
    assert digest(chest2) == before
    src = {int(h.InstanceNumber): h for h in headers(chest2)}
    nd = {int(h.InstanceNumber): h for h in headers(sim / "nd")}
    ld = {int(h.InstanceNumber): h for h in headers(sim / "ld_0.25")}
    assert set(src) == set(nd) == set(ld)
    for n, s in src.items():
        for kw in ("XRayTubeCurrent", "Exposure", "CTDIvol"):
            assert nd[n][kw].value == s[kw].value, kw  # the reference keeps the scan's own dose
        assert ld[n].XRayTubeCurrent == round(0.25 * s.XRayTubeCurrent)
        assert float(ld[n].XRayTubeCurrentInuA) == pytest.approx(250.0 * s.XRayTubeCurrent)
        assert ld[n].Exposure == round(0.25 * s.Exposure)
        assert ld[n].ExposureInuAs == round(250.0 * s.Exposure)
        assert ld[n].CTDIvol == pytest.approx(0.25 * s.CTDIvol, rel=1e-12)
        assert ld[n].ExposureTime == s.ExposureTime and ld[n].KVP == s.KVP
        f = next(p for p in (sim / "ld_0.25").iterdir() if int(pydicom.dcmread(p, stop_before_pixels=True)
                                                               .InstanceNumber) == n)
        assert dcmdump(f, "0018,1153")["0018,1153"] == str(round(250.0 * s.Exposure))  # dcmtk agrees
    # ldct.dose reads the dose back from the written series
    ndv, ldv = read_volume(sim / "nd"), read_volume(sim / "ld_0.25")
    d, how = estimate_dose(ldv, reference_ctdivol=ndv.meta["ctdivol"])
    assert d == pytest.approx(0.25, rel=1e-9) and "CTDIvol" in how
    d, how = estimate_dose(ldv, reference_mas=ndv.meta["exposure_mas"])
    assert d == pytest.approx(0.25, rel=1e-6) and "mAs" in how
    # and from the in-memory simulated volume
    scan = simulate_volume(ndv, [0.5], mode="gaussian", noise_sigma=12.0, seed=0)
    assert estimate_dose(scan.low_dose[0.5], reference_mas=ndv.meta["exposure_mas"])[0] == pytest.approx(0.5)


def test_super_resolution_low_dose_stays_in_the_patient_study(chest2, tmp_path, capsys):
    sim = tmp_path / "sr"
    rc = main(["simulate", str(chest2), "--dose", "0.5", "-o", str(sim), "--mode", "gaussian",
               "--sigma", "12", "--seed", "0", "--downsample", "2"])
    assert rc == 0, capsys.readouterr().err
    src = {int(h.InstanceNumber): h for h in headers(chest2)}
    for h in headers(sim / "ld_0.5"):
        s = src[int(h.InstanceNumber)]
        assert (h.Rows, h.Columns) == (256, 256)
        for kw in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "PatientIdentityRemoved"):
            assert h[kw].value == s[kw].value, kw
        assert h.XRayTubeCurrent == round(0.5 * s.XRayTubeCurrent)
        assert float(h.PixelSpacing[0]) == pytest.approx(2 * float(s.PixelSpacing[0]))


@pytest.mark.parametrize("what", ["position", "orientation", "degenerate", "spacing", "thickness"])
def test_non_finite_geometry_is_refused(chest2, tmp_path, what):
    vol = read_volume(chest2)
    bad = vol.with_data(vol.data)
    if what == "position":
        bad.positions = np.array(vol.positions, dtype=np.float64)
        bad.positions[1, 2] = np.nan
    elif what == "orientation":
        bad.orientation = (1.0, 0.0, 0.0, 0.0, float("inf"), 0.0)
    elif what == "degenerate":
        bad.orientation = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    elif what == "spacing":
        bad.spacing = (8.0, float("nan"), 0.646)
    else:
        bad.slice_thickness = float("inf")
    out = tmp_path / "out"
    with pytest.raises(LdctError, match="NaN|Inf|finite|normal"):
        write_volume(bad, out, source=vol)
    assert not out.exists()


def test_enhanced_source_gives_per_frame_attributes(shared_data, tmp_path):
    from test_io_enhanced import build_enhanced_ct

    files = sorted((shared_data / "chest_dicom").iterdir())[CHEST_SLICES]
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    by_z = {round(float(h.ImagePositionPatient[2]), 3): h for h in src}
    enh = read_volume(build_enhanced_ct(files, tmp_path / "enhanced.dcm", seed=5))
    out = write_volume(enh, tmp_path / "classic", source=enh)
    for h in headers(out):
        s = by_z[round(float(h.ImagePositionPatient[2]), 3)]
        assert h.XRayTubeCurrent == s.XRayTubeCurrent and h.Exposure == s.Exposure
        assert h.ExposureInuAs == 1000 * s.Exposure
        frame = int(h.SourceImageSequence[0].ReferencedFrameNumber)
        assert 1 <= frame <= len(files)
