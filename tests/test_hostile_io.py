"""Hostile and unusual inputs to every reader: no traceback, no hang, no garbage (issue 13, section 2).

A corpus is made from real data (``../shared/data``) with pydicom edits, NumPy and Pillow: special files
(named pipes, devices, link loops), size bombs (NumberOfFrames, Rows/Columns, PNG/TIFF/NIfTI headers, a
1000x .npz), malformed numeric tags, degenerate geometry, values that cannot be HU, masks given as HU,
truncated and empty files. Each case runs the real ``ldct`` command in a subprocess with a timeout (a
hang fails) and an address-space limit (a memory bomb fails), and must give exit code 2 with one stderr
line ``ldct: error: <file>: <problem>`` and no traceback (or, for special files inside a series folder,
read the series and skip them). The inputs must stay byte-for-byte unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import resource
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

TIMEOUT_S = int(os.environ.get("LDCT_HOSTILE_TIMEOUT_S", "60"))  # generous on 2 shared cores
MEMORY_LIMIT = 3 << 30  # address space of one `ldct` run (memory bombs fail with MemoryError)
RUN = "import sys; from ldct.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # {d} = this case's folder, {o} = an empty output folder
    name: str  # what the error line must name (file or option)
    problem: str  # what it must say (case-insensitive substring)
    ok: bool = False  # a readable series with junk to skip: exit 0, `expect` in stdout
    expect: str = ""
    heavy: bool = False  # imports torch (denoise): no address-space limit


def C(id, args, name, problem, **kw) -> Case:  # short table rows
    return Case(id, tuple(args), name, problem, **kw)


# --------------------------------------------------------------------------- building the corpus


def set_raw(ds: pydicom.Dataset, keyword: str, value: bytes) -> None:
    """Store ``value`` verbatim (pydicom refuses to *set* invalid values, but files carry them)."""
    tag = Tag(tag_for_keyword(keyword))
    vr = pydicom.datadict.dictionary_VR(tag)
    if len(value) % 2:
        value += b" "
    ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def dicom_edit(src: Path, dst: Path, edits: dict[str, bytes | None]) -> Path:
    ds = pydicom.dcmread(src)
    for kw, v in edits.items():
        if v is None:
            delattr(ds, kw)
        else:
            set_raw(ds, kw, v)
    ds.save_as(dst)
    return dst


def series_dir(d: Path, files: list[Path], name: str = "series") -> Path:
    s = d / name
    s.mkdir()
    for f in files:
        shutil.copy(f, s / f.name)
    return s


def png_claiming(size: tuple[int, int]) -> bytes:
    """A real 16x16 PNG whose IHDR is rewritten to claim ``size`` (CRC fixed)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(buf, format="PNG")
    b = bytearray(buf.getvalue())
    b[16:24] = struct.pack(">II", *size)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def nifti_bytes(shape: tuple[int, ...], data: np.ndarray, **hdr_fields) -> bytes:
    """A NIfTI-1 single file (.nii) whose header claims ``shape``, followed by ``data``'s bytes."""
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((2, 2, 2), data.dtype), np.diag([-0.7, -0.7, 3.0, 1.0]))
    h = img.header
    h.set_data_shape(shape)
    h["vox_offset"] = 352
    for k, v in hdr_fields.items():
        h[k] = v
    return h.binaryblock + b"\0" * 4 + data.tobytes()


def build(d: Path, case: str, data: Path) -> None:
    """Create the input(s) of ``case`` in its folder ``d``."""
    chest = sorted((data / "chest_dicom").iterdir())
    head = sorted((data / "head_dicom_tilted").iterdir())
    abdomen = sorted((data / "abdomen_dicom").iterdir())
    c0 = chest[0]
    three = chest[:3]

    def one(edits: dict, name: str = "x.dcm", src: Path = c0) -> Path:
        return dicom_edit(src, d / name, edits)

    def in_series(edits: dict, k: int = 1) -> None:
        s = series_dir(d, [f for i, f in enumerate(three) if i != k])
        dicom_edit(three[k], s / three[k].name, edits)

    if case.startswith("fifo_"):
        os.mkfifo(d / case.split("_", 1)[1].replace("_", "."))
    elif case == "in_series_fifo":
        os.mkfifo(series_dir(d, three) / "zz.dcm")
    elif case == "in_series_link_loop":
        s = series_dir(d, three)
        (s / "loop.dcm").symlink_to(s / "loop.dcm")
        (s / "up").symlink_to("..")
        (s / "zero.dcm").symlink_to("/dev/zero")
    elif case == "in_series_link_to_proc":  # followed links must not walk /proc (whose files block)
        s = series_dir(d, three)
        (s / "proc").symlink_to("/proc", target_is_directory=True)
        (s / "empty.dcm").write_bytes(b"")
    elif case == "device_npy":
        (d / "zero.npy").symlink_to("/dev/zero")
    elif case == "device_dcm":
        (d / "zero.dcm").symlink_to("/dev/zero")
    elif case.startswith("empty_"):
        (d / ("empty." + case.split("_", 1)[1].replace("_", "."))).write_bytes(b"")
    elif case == "not_dicom_dir":
        s = d / "notes"
        s.mkdir()
        for i in range(3):
            (s / f"page{i}.txt").write_text("not a scan\n" * 50)
        (s / "photo.png").write_bytes(png_claiming((16, 16)))
    elif case == "truncated_in_series":
        s = series_dir(d, three[:2])
        (s / three[2].name).write_bytes(three[2].read_bytes()[:300_000])
    elif case == "truncated_j2k":
        (d / "x.dcm").write_bytes(abdomen[0].read_bytes()[:60_000])
    # --- frames / sizes
    elif case == "frames_billions":
        one({"NumberOfFrames": b"2000000000"})
    elif case == "frames_billions_j2k":
        one({"NumberOfFrames": b"2000000000"}, src=abdomen[0])
    elif case == "frames_abc":
        one({"NumberOfFrames": b"abc"})
    elif case == "frames_zero":
        one({"NumberOfFrames": b"0"})
    elif case == "frames_three_data_one":
        one({"NumberOfFrames": b"3"})
    elif case == "rows_huge":
        one({"Rows": struct.pack("<H", 60000), "Columns": struct.pack("<H", 60000)})
    elif case == "rows_vs_filesize":
        one({"Rows": struct.pack("<H", 4000), "Columns": struct.pack("<H", 4000)})
    elif case == "rows_j2k_vs_data":
        one({"Rows": struct.pack("<H", 4000), "Columns": struct.pack("<H", 4000)}, src=abdomen[0])
    elif case == "rows_zero":
        one({"Rows": struct.pack("<H", 0)})
    elif case == "rows_missing":
        one({"Rows": None})
    elif case == "bits_64":
        one({"BitsAllocated": struct.pack("<H", 64), "BitsStored": struct.pack("<H", 64)})
    elif case == "bits_huge":
        one({"BitsAllocated": struct.pack("<H", 65535)})
    elif case == "bits_12":
        one({"BitsAllocated": struct.pack("<H", 12)})
    elif case == "bits_stored_gt_allocated":
        one({"BitsStored": struct.pack("<H", 20)})
    elif case == "pixrep_2":
        one({"PixelRepresentation": struct.pack("<H", 2)})
    # --- malformed numeric tags
    elif case == "instance_abc":
        in_series({"InstanceNumber": b"abc"})
    elif case == "series_number_abc":
        one({"SeriesNumber": b"abc"})
    elif case == "thickness_abc":
        one({"SliceThickness": b"abc"})
    elif case == "thickness_negative":
        one({"SliceThickness": b"-3"})
    elif case == "spacing_xy":
        one({"PixelSpacing": b"x\\y"})
    elif case == "spacing_zero":
        one({"PixelSpacing": b"0\\0"})
    elif case == "spacing_nan":
        one({"PixelSpacing": b"nan\\nan"})
    elif case == "spacing_one_value":
        one({"PixelSpacing": b"0.7"})
    elif case == "position_two_values":
        in_series({"ImagePositionPatient": b"1\\2"})
    elif case == "position_nan":
        in_series({"ImagePositionPatient": b"nan\\0\\0"})
    elif case.startswith("slope_"):
        one(
            {
                "RescaleSlope": {
                    "zero": b"0",
                    "nan": b"nan",
                    "abc": b"abc",
                    "negative": b"-1",
                    "1e6": b"1e6",
                }[case.split("_", 1)[1]]
            }
        )
    elif case == "intercept_abc":
        one({"RescaleIntercept": b"abc"})
    elif case == "intercept_inf":
        one({"RescaleIntercept": b"inf"})
    elif case == "ts_unknown":
        raw = c0.read_bytes()
        old = pydicom.uid.ExplicitVRLittleEndian.encode() + b"\0"
        assert raw.count(old) == 1
        (d / "x.dcm").write_bytes(raw.replace(old, b"1.2.3.4.5.6.7.8.9.1\0"))
    # --- orientation
    elif case.startswith("orientation_"):
        v = {
            "zeros": b"0\\0\\0\\0\\0\\0",
            "parallel": b"1\\0\\0\\1\\0\\0",
            "nan": b"nan\\0\\0\\0\\1\\0",
            "five": b"1\\0\\0\\0\\1",
        }[case.split("_", 1)[1]]
        s = series_dir(d, [])
        for f in three:
            dicom_edit(f, s / f.name, {"ImageOrientationPatient": v})
    # --- values that cannot be HU, modality mix
    elif case == "pixrep_wrong":
        one({"PixelRepresentation": struct.pack("<H", 0)}, src=head[0])
    elif case == "mixed_modality":
        in_series({"Modality": b"MR"})
    # --- arrays
    elif case == "npy_header_huge":
        (d / "x.npy").write_bytes(npy_header((100000, 100000), "<f8") + b"\0" * 64)
    elif case == "npy_truncated":
        buf = io.BytesIO()
        np.save(buf, np.full((4, 64, 64), -1000.0, np.float32))
        (d / "x.npy").write_bytes(buf.getvalue()[:20000])
    elif case == "npy_bool_mask":
        m = np.zeros((2, 32, 32), bool)
        m[:, 8:20, 8:20] = True
        np.save(d / "mask.npy", m)
    elif case == "npy_uint8_mask":
        m = np.zeros((2, 32, 32), np.uint8)
        m[:, 8:20, 8:20] = 1
        np.save(d / "mask.npy", m)
    elif case == "npy_255_mask":
        m = np.zeros((32, 32), np.uint8)
        m[8:20, 8:20] = 255
        np.save(d / "mask.npy", m)
    elif case == "npy_object":
        np.save(d / "x.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif case == "npy_values_1e9":
        np.save(d / "x.npy", np.full((16, 16), 1e9, np.float32) * np.linspace(-1, 1, 16, dtype=np.float32))
    elif case == "npz_bomb":
        chunk = bytes(1 << 20)
        with (
            zipfile.ZipFile(d / "bomb.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z,
            z.open("hu.npy", "w", force_zip64=True) as f,
        ):
            f.write(npy_header((800, 512, 512), "<i2"))
            for _ in range(400):
                f.write(chunk)
        assert (d / "bomb.npz").stat().st_size < 800 * 512 * 512 * 2 / 500  # it expands ~1000x
    elif case == "npz_forged_header":
        with zipfile.ZipFile(d / "x.npz", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("hu.npy", npy_header((3000, 4096, 4096), "<f8") + b"\0" * 4096)
    elif case.startswith("npz_geometry_"):
        what = case.rsplit("_", 1)[1]
        geo = {
            "spacing": np.array([3.0, 0.7, 0.7]),
            "orientation": np.array([1.0, 0, 0, 0, 1, 0]),
            "positions": np.array([[0.0, 0, 0], [0, 0, 3]]),
        }
        bad = {
            "spacingnan": ("spacing", np.array([np.nan, 0.7, 0.7])),
            "spacingzero": ("spacing", np.array([0.0, 0.7, 0.7])),
            "spacingtwo": ("spacing", np.array([0.7, 0.7])),
            "orientationzero": ("orientation", np.zeros(6)),
            "positionsnan": ("positions", np.array([[0.0, 0, 0], [0, np.nan, 3]])),
        }[what]
        geo[bad[0]] = bad[1]
        np.savez_compressed(d / "x.npz", hu=np.full((2, 16, 16), -1000.0, np.float32), **geo)
    elif case.startswith("raw_"):
        shutil.copy(data / "mayo_L067_fd_raw" / "L067_FD_3mm_sharp_000039.raw", d / "x.raw")
        (d / "small.raw").write_bytes(b"\1" * 64)
    elif case.startswith("npyspacing_"):
        np.save(d / "x.npy", np.full((2, 16, 16), -1000.0, np.float32))
    # --- NIfTI
    elif case == "nii_uint8_mask":
        import nibabel as nib

        m = np.zeros((32, 32, 4), np.uint8)
        m[8:20, 8:20] = 1
        nib.save(nib.Nifti1Image(m, np.diag([-0.7, -0.7, 3.0, 1.0])), d / "mask.nii.gz")
    elif case == "nii_header_huge":
        (d / "x.nii").write_bytes(nifti_bytes((4000, 4000, 4000), np.zeros(64, np.int16)))
    elif case == "niigz_header_huge":
        (d / "x.nii.gz").write_bytes(gzip.compress(nifti_bytes((4000, 4000, 4000), np.zeros(64, np.int16))))
    elif case == "niigz_side_huge":
        (d / "x.nii.gz").write_bytes(gzip.compress(nifti_bytes((30000, 30000, 1), np.zeros(64, np.int16))))
    elif case == "nii_affine_nan":
        (d / "x.nii").write_bytes(
            nifti_bytes(
                (8, 8, 2),
                np.full(128, -1000, np.int16),
                sform_code=1,
                qform_code=0,
                srow_x=[np.nan, 0, 0, 0],
                srow_y=[0, 0.7, 0, 0],
                srow_z=[0, 0, 3, 0],
            )
        )
    elif case == "nii_affine_parallel":
        (d / "x.nii").write_bytes(
            nifti_bytes(
                (8, 8, 2),
                np.full(128, -1000, np.int16),
                sform_code=1,
                qform_code=0,
                srow_x=[0.7, 0.7, 0, 0],
                srow_y=[0, 0, 0, 0],
                srow_z=[0, 0, 3, 0],
            )
        )
    elif case == "nii_slope_1e6":
        import nibabel as nib

        vol = nib.load(data / "volumes" / "abdomen_3mm.nii.gz")
        arr = np.asarray(vol.dataobj)[40:80, 30:70, 50:54].astype(np.int16)
        b = bytearray(
            nifti_bytes(arr.shape, np.asfortranarray(arr).ravel(order="F"), scl_slope=1e6, scl_inter=0)
        )
        (d / "x.nii").write_bytes(bytes(b))
    # --- images
    elif case == "png_20000":
        (d / "big.png").write_bytes(png_claiming((20000, 20000)))
    elif case == "png_12000":
        (d / "big.png").write_bytes(png_claiming((12000, 12000)))
    elif case == "png_truncated":
        from PIL import Image

        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(d / "full.png")
        (d / "x.png").write_bytes((d / "full.png").read_bytes()[:30000])
        (d / "full.png").unlink()
    elif case == "tiff_huge":
        import tifffile

        tifffile.imwrite(d / "x.tif", np.zeros((16, 16), np.int16))
        with tifffile.TiffFile(d / "x.tif") as tf:
            tags = tf.pages[0].tags
            offsets = [(tags[t].valueoffset, tags[t].dtype) for t in ("ImageWidth", "ImageLength")]
        b = bytearray((d / "x.tif").read_bytes())
        for off, dt in offsets:
            fmt = "<H" if int(dt) == 3 else "<I"
            b[off : off + struct.calcsize(fmt)] = struct.pack(fmt, 60000)
        (d / "x.tif").write_bytes(bytes(b))
    elif case == "denoise_fifo":
        os.mkfifo(d / "scan.npy")
    elif case == "denoise_mask":
        m = np.zeros((2, 64, 64), np.uint8)
        m[:, 8:40, 8:40] = 1
        np.save(d / "mask.npy", m)
    elif case == "denoise_npy_header_huge":
        (d / "x.npy").write_bytes(npy_header((3000, 4096, 4096), "<f4") + b"\0" * 64)
    else:
        raise AssertionError(f"no builder for {case}")


# --------------------------------------------------------------------------- the cases

_INFO = "info"
CASES = [
    # special files: refuse before opening (a named pipe blocks open() forever), skip them in a folder
    C("fifo_x_dcm", [_INFO, "{d}/x.dcm"], "x.dcm", "named pipe"),
    C("fifo_x_npy", [_INFO, "{d}/x.npy"], "x.npy", "named pipe"),
    C("fifo_x_nii_gz", ["convert", "{d}/x.nii.gz", "{o}/y.npy"], "x.nii.gz", "named pipe"),
    C("fifo_x_png", ["preview", "{d}/x.png", "-o", "{o}/y.png"], "x.png", "named pipe"),
    C("fifo_x_raw", [_INFO, "{d}/x.raw", "--raw-shape", "4,4"], "x.raw", "named pipe"),
    C("device_npy", [_INFO, "{d}/zero.npy"], "zero.npy", "character device"),
    C("device_dcm", [_INFO, "{d}/zero.dcm"], "zero.dcm", "character device"),
    C("in_series_fifo", [_INFO, "{d}/series"], "", "", ok=True, expect="3 x 512 x 512"),
    C("in_series_link_loop", [_INFO, "{d}/series"], "", "", ok=True, expect="3 x 512 x 512"),
    C("in_series_link_to_proc", [_INFO, "{d}/series"], "", "", ok=True, expect="3 x 512 x 512"),
    # empty, truncated, not DICOM
    C("empty_dcm", [_INFO, "{d}/empty.dcm"], "empty.dcm", "empty"),
    C("empty_npy", [_INFO, "{d}/empty.npy"], "empty.npy", "empty"),
    C("empty_npz", [_INFO, "{d}/empty.npz"], "empty.npz", "empty"),
    C("empty_nii_gz", [_INFO, "{d}/empty.nii.gz"], "empty.nii.gz", "empty"),
    C("empty_png", ["preview", "{d}/empty.png", "-o", "{o}/y.png"], "empty.png", "empty"),
    C("empty_raw", [_INFO, "{d}/empty.raw", "--raw-shape", "4,4"], "empty.raw", "empty"),
    C("not_dicom_dir", [_INFO, "{d}/notes"], "notes", "no DICOM files found"),
    C("truncated_in_series", [_INFO, "{d}/series"], "1-03.dcm", "truncated"),
    C("truncated_j2k", [_INFO, "{d}/x.dcm"], "x.dcm", "truncated"),
    # size claims checked against the file size and caps before allocating
    C("frames_billions", [_INFO, "{d}/x.dcm"], "x.dcm", "NumberOfFrames"),
    C("frames_billions_j2k", [_INFO, "{d}/x.dcm"], "x.dcm", "NumberOfFrames"),
    C("frames_abc", [_INFO, "{d}/x.dcm"], "x.dcm", "NumberOfFrames"),
    C("frames_zero", [_INFO, "{d}/x.dcm"], "x.dcm", "NumberOfFrames"),
    C("frames_three_data_one", [_INFO, "{d}/x.dcm"], "x.dcm", "NumberOfFrames"),
    C("rows_huge", [_INFO, "{d}/x.dcm"], "x.dcm", "Rows"),
    C("rows_vs_filesize", [_INFO, "{d}/x.dcm"], "x.dcm", "Rows"),
    C("rows_j2k_vs_data", [_INFO, "{d}/x.dcm"], "x.dcm", "Rows"),
    C("rows_zero", [_INFO, "{d}/x.dcm"], "x.dcm", "Rows"),
    C("rows_missing", [_INFO, "{d}/x.dcm"], "x.dcm", "Rows"),
    C("bits_64", [_INFO, "{d}/x.dcm"], "x.dcm", "BitsAllocated"),
    C("bits_huge", [_INFO, "{d}/x.dcm"], "x.dcm", "BitsAllocated"),
    C("bits_12", [_INFO, "{d}/x.dcm"], "x.dcm", "BitsAllocated"),
    C("bits_stored_gt_allocated", [_INFO, "{d}/x.dcm"], "x.dcm", "BitsStored"),
    C("pixrep_2", [_INFO, "{d}/x.dcm"], "x.dcm", "PixelRepresentation"),
    # malformed numeric tags
    C("instance_abc", [_INFO, "{d}/series"], "1-02.dcm", "InstanceNumber"),
    C("series_number_abc", [_INFO, "{d}/x.dcm"], "x.dcm", "SeriesNumber"),
    C("thickness_abc", [_INFO, "{d}/x.dcm"], "x.dcm", "SliceThickness"),
    C("thickness_negative", [_INFO, "{d}/x.dcm"], "x.dcm", "SliceThickness"),
    C("spacing_xy", [_INFO, "{d}/x.dcm"], "x.dcm", "PixelSpacing"),
    C("spacing_zero", ["convert", "{d}/x.dcm", "{o}/y.nii.gz"], "x.dcm", "PixelSpacing"),
    C("spacing_nan", ["convert", "{d}/x.dcm", "{o}/y.nii.gz"], "x.dcm", "PixelSpacing"),
    C("spacing_one_value", [_INFO, "{d}/x.dcm"], "x.dcm", "PixelSpacing"),
    C("position_two_values", [_INFO, "{d}/series"], "1-02.dcm", "ImagePositionPatient"),
    C("position_nan", ["convert", "{d}/series", "{o}/y.nii.gz"], "1-02.dcm", "ImagePositionPatient"),
    C("slope_zero", [_INFO, "{d}/x.dcm"], "x.dcm", "RescaleSlope"),
    C("slope_nan", [_INFO, "{d}/x.dcm"], "x.dcm", "RescaleSlope"),
    C("slope_abc", [_INFO, "{d}/x.dcm"], "x.dcm", "RescaleSlope"),
    C("slope_negative", ["preview", "{d}/x.dcm", "-o", "{o}/y.png"], "x.dcm", "RescaleSlope"),
    C("slope_1e6", ["convert", "{d}/x.dcm", "{o}/y.npy"], "x.dcm", "RescaleSlope"),
    C("intercept_abc", [_INFO, "{d}/x.dcm"], "x.dcm", "RescaleIntercept"),
    C("intercept_inf", [_INFO, "{d}/x.dcm"], "x.dcm", "RescaleIntercept"),
    C("ts_unknown", [_INFO, "{d}/x.dcm"], "x.dcm", "transfer syntax"),
    # degenerate geometry
    C("orientation_zeros", [_INFO, "{d}/series"], ".dcm", "ImageOrientationPatient"),
    C("orientation_parallel", [_INFO, "{d}/series"], ".dcm", "ImageOrientationPatient"),
    C("orientation_nan", ["convert", "{d}/series", "{o}/y.nii.gz"], ".dcm", "ImageOrientationPatient"),
    C("orientation_five", [_INFO, "{d}/series"], ".dcm", "ImageOrientationPatient"),
    # silent garbage: values that cannot be HU, an MR slice inside a CT series, masks as HU
    C("pixrep_wrong", [_INFO, "{d}/x.dcm"], "x.dcm", "impossible for CT"),
    C("mixed_modality", [_INFO, "{d}/series"], "1-02.dcm", "MR"),
    C("npy_values_1e9", [_INFO, "{d}/x.npy"], "x.npy", "impossible for CT"),
    C("npy_bool_mask", [_INFO, "{d}/mask.npy"], "mask.npy", "looks like a mask"),
    C("npy_uint8_mask", ["convert", "{d}/mask.npy", "{o}/y.nii.gz"], "mask.npy", "looks like a mask"),
    C("npy_255_mask", [_INFO, "{d}/mask.npy"], "mask.npy", "looks like a mask"),
    C("nii_uint8_mask", [_INFO, "{d}/mask.nii.gz"], "mask.nii.gz", "looks like a mask"),
    C("nii_slope_1e6", [_INFO, "{d}/x.nii"], "x.nii", "impossible for CT"),
    # arrays
    C("npy_header_huge", [_INFO, "{d}/x.npy"], "x.npy", "truncated"),
    C("npy_truncated", [_INFO, "{d}/x.npy"], "x.npy", "truncated"),
    C("npy_object", [_INFO, "{d}/x.npy"], "x.npy", "object"),
    C("npz_bomb", [_INFO, "{d}/bomb.npz"], "bomb.npz", "expand"),
    C("npz_forged_header", [_INFO, "{d}/x.npz"], "x.npz", "hu.npy"),
    C("npz_geometry_spacingnan", [_INFO, "{d}/x.npz"], "x.npz", "spacing"),
    C("npz_geometry_spacingzero", [_INFO, "{d}/x.npz"], "x.npz", "spacing"),
    C("npz_geometry_spacingtwo", [_INFO, "{d}/x.npz"], "x.npz", "spacing"),
    C("npz_geometry_orientationzero", [_INFO, "{d}/x.npz"], "x.npz", "orientation"),
    C("npz_geometry_positionsnan", [_INFO, "{d}/x.npz"], "x.npz", "positions"),
    C(
        "raw_shape_overflow",
        [_INFO, "{d}/small.raw", "--raw-shape", f"4,{2**62 + 16}", "--raw-dtype", "uint8"],
        "small.raw",
        "--raw-shape",
    ),
    C("raw_shape_bigint", [_INFO, "{d}/small.raw", "--raw-shape", f"{2**70},4"], "small.raw", "--raw-shape"),
    C("raw_shape_huge", [_INFO, "{d}/x.raw", "--raw-shape", "100000,100000"], "x.raw", "--raw-shape"),
    C(
        "raw_spacing_zero",
        [_INFO, "{d}/x.raw", "--raw-shape", "512,512", "--raw-spacing", "0,0.7,0.7"],
        "--raw-spacing",
        "positive",
    ),
    C(
        "raw_spacing_nan",
        ["convert", "{d}/x.raw", "{o}/y.nii.gz", "--raw-shape", "512,512", "--raw-spacing", "nan,0.7,0.7"],
        "--raw-spacing",
        "positive",
    ),
    C(
        "raw_spacing_negative",
        [_INFO, "{d}/x.raw", "--raw-shape", "512,512", "--raw-spacing", "3,-0.7,0.7"],
        "--raw-spacing",
        "positive",
    ),
    C("npyspacing_inf", [_INFO, "{d}/x.npy", "--raw-spacing", "inf,1,1"], "--raw-spacing", "positive"),
    C(
        "npyspacing_nan",
        ["preview", "{d}/x.npy", "-o", "{o}/y.png", "--raw-spacing", "1,nan,1"],
        "--raw-spacing",
        "positive",
    ),
    C(
        "raw_dtype_struct",
        [_INFO, "{d}/x.raw", "--raw-shape", "512,512", "--raw-dtype", "i4,i4"],
        "--raw-dtype",
        "not a number type",
    ),
    C(
        "raw_dtype_complex",
        [_INFO, "{d}/x.raw", "--raw-shape", "512,128", "--raw-dtype", "c8"],
        "--raw-dtype",
        "not a number type",
    ),
    # NIfTI headers
    C("nii_header_huge", [_INFO, "{d}/x.nii"], "x.nii", "4000 x 4000 x 4000"),
    C("niigz_header_huge", [_INFO, "{d}/x.nii.gz"], "x.nii.gz", "4000 x 4000 x 4000"),
    C("niigz_side_huge", [_INFO, "{d}/x.nii.gz"], "x.nii.gz", "30000"),
    C("nii_affine_nan", [_INFO, "{d}/x.nii"], "x.nii", "affine"),
    C("nii_affine_parallel", [_INFO, "{d}/x.nii"], "x.nii", "affine"),
    # images
    C("png_20000", ["preview", "{d}/big.png", "-o", "{o}/y.png"], "big.png", "20000 x 20000"),
    C("png_12000", [_INFO, "{d}/big.png"], "big.png", "12000 x 12000"),
    C("png_truncated", [_INFO, "{d}/x.png"], "x.png", "truncated"),
    C("tiff_huge", [_INFO, "{d}/x.tif"], "x.tif", "60000 x 60000"),
    # the same readers behind `ldct denoise` (loads the bundled model: a few cases only)
    C(
        "denoise_fifo",
        ["denoise", "{d}/scan.npy", "-o", "{o}/y.npy", "--device", "cpu"],
        "scan.npy",
        "named pipe",
        heavy=True,
    ),
    C(
        "denoise_mask",
        ["denoise", "{d}/mask.npy", "-o", "{o}/y.npy", "--device", "cpu"],
        "mask.npy",
        "looks like a mask",
        heavy=True,
    ),
    C(
        "denoise_npy_header_huge",
        ["denoise", "{d}/x.npy", "-o", "{o}/y.npy", "--device", "cpu"],
        "x.npy",
        "truncated",
        heavy=True,
    ),
]


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not p.is_file():
            out[str(p)] = "special"
        else:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_ldct(args: list[str], *, heavy: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, "-c", RUN, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            preexec_fn=None if heavy else _limit_memory,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"HANG: `ldct {' '.join(args)}` gave no answer within {TIMEOUT_S} s")


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def test_corpus_size():
    """The corpus: print and count it (each case is one parametrized test below)."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    print(f"hostile-input corpus: {len(CASES)} cases")
    assert len(CASES) >= 96


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, corpus_root: Path, shared_data: Path, tmp_path: Path):
    d = corpus_root / case.id
    d.mkdir()
    build(d, case.id, shared_data)
    before = _digest(d)
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(d=d, o=out) for a in case.args]
    res = run_ldct(args, heavy=case.heavy)
    err = res.stderr
    assert "Traceback" not in err, f"TRACEBACK:\n{err[-3000:]}"
    if case.ok:
        assert res.returncode == 0, err
        assert case.expect in res.stdout, res.stdout
        assert "not a regular file" in res.stdout + err
    else:
        errors = [ln for ln in err.splitlines() if ln.startswith("ldct: error: ")]
        assert res.returncode == 2, f"EXIT {res.returncode}, expected 2:\n{err[-2000:]}\n{res.stdout[-500:]}"
        assert len(errors) == 1 and len(err.strip().splitlines()) <= 3, f"NOT ONE LINE:\n{err[-2000:]}"
        line = errors[0]
        assert case.name in line, f"WORDING: {case.name!r} not named in {line!r}"
        assert case.problem.lower() in line.lower(), f"WORDING: {case.problem!r} not in {line!r}"
        assert not list(out.iterdir()), "something was written"
    assert _digest(d) == before, "an input was modified"


def test_photo_folder_skips_special_files(tmp_path: Path):
    """``data.kind: photos`` lists only regular image files (a pipe or a folder named .png is skipped)."""
    from PIL import Image

    from ldct.data.photos import find_photos, read_intensities
    from ldct.errors import LdctError

    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    (tmp_path / "c.png").mkdir()
    assert list(find_photos(tmp_path)) == ["a"]
    with pytest.raises(LdctError, match="named pipe"):
        read_intensities(tmp_path / "b.png")


def test_caps_are_not_hit_by_real_data(shared_data: Path):
    """The caps leave every real scan of the test data readable, with its values unchanged."""
    from ldct.io import read_volume

    vol = read_volume(shared_data / "head_dicom_tilted")  # signed, padding -1500
    assert vol.data.shape == (28, 512, 512) and -1100 < vol.data.min() < -900
    vol = read_volume(shared_data / "volumes" / "chest_1p5mm.nii.gz")
    assert vol.data.shape == (191, 167, 233)
    assert math.isclose(vol.spacing[0], 1.5, rel_tol=1e-4)
