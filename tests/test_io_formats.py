"""npy / npz / raw / PNG / JPEG / TIFF readers and writers, and previews."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from ldct.hu import DISPLAY_WINDOWS, parse_window
from ldct.io import read_volume, write_volume
from ldct.io.preview import render

MAYO = "mayo_L067_fd_raw"


def mayo(shared_data, name, **kw):
    return read_volume(shared_data / MAYO / name, raw_shape=(512, 512), raw_offset=-1024, **kw)


def test_mayo_raw_in_hu(shared_data):
    smooth = mayo(shared_data, "L067_FD_3mm_smooth_0150.raw", raw_spacing=(3.0, 0.7, 0.7))
    sharp = mayo(shared_data, "L067_FD_3mm_sharp_000149.raw")
    assert smooth.shape == (1, 512, 512) and smooth.spacing == (3.0, 0.7, 0.7)
    assert not smooth.meta["warnings"] and "spacing unknown" in sharp.meta["warnings"][0]
    for vol in (smooth, sharp):
        air = vol.data[0, 20:60, 200:300]  # anterior, outside the body
        muscle = vol.data[0, 240:270, 50:80]  # gluteal muscle
        assert abs(np.median(air) + 1000) < 50
        assert 0 <= np.median(muscle) <= 80
    # the sharp kernel is noisier in the same muscle (neighbouring slices of one patient)
    assert sharp.data[0, 240:270, 50:80].std() > 1.5 * smooth.data[0, 240:270, 50:80].std()


def test_raw_dtype_shape_and_offset(tmp_path):
    vals = (np.arange(2 * 3 * 4).reshape(2, 3, 4) - 5).astype(">i2")  # big endian on disk
    p = tmp_path / "vol.bin"
    vals.tofile(p)
    vol = read_volume(p, raw_shape=(2, 3, 4), raw_dtype=">i2", raw_offset=10)
    np.testing.assert_array_equal(vol.data, vals.astype(np.float32) + 10)


def test_npy_slice_and_volume_round_trip(shared_data, tmp_path):
    src = mayo(shared_data, "L067_FD_3mm_smooth_0040.raw")
    p = write_volume(src, tmp_path / "slice.npy")
    arr = np.load(p)
    assert arr.shape == (512, 512) and arr.dtype == np.float32  # one slice is written (y, x)
    np.testing.assert_array_equal(read_volume(p).data, src.data)
    stack = src.with_data(np.concatenate([src.data, src.data[:, ::-1]]))
    p3 = write_volume(stack, tmp_path / "stack.npy")
    assert np.load(p3).shape == (2, 512, 512)
    np.testing.assert_array_equal(read_volume(p3).data, stack.data)


def test_npz_keeps_geometry(shared_data, tmp_path):
    vol = read_volume(shared_data / "volumes" / "abdomen_3mm.nii.gz")
    part = vol.with_data(vol.data[50:53])
    part.positions = vol.positions[50:53]
    back = read_volume(write_volume(part, tmp_path / "part.npz"))
    np.testing.assert_array_equal(back.data, part.data)
    np.testing.assert_allclose(back.affine_lps(), part.affine_lps())


def test_photographs_are_not_hu(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    v = read_volume(tmp_path / "rgb.png")
    assert not v.is_hu and v.shape == (1, 20, 30, 3) and v.channels == 3
    np.testing.assert_array_equal(v.data[0], rgb)
    assert read_volume(tmp_path / "rgb.jpg").shape == (1, 20, 30, 3)
    t = read_volume(tmp_path / "rgb.tif")
    assert not t.is_hu and t.shape == (1, 20, 30, 3)
    g = read_volume(tmp_path / "grey.png")
    assert not g.is_hu and g.shape == (1, 20, 30)
    np.testing.assert_array_equal(g.data[0], rgb[..., 0])
    assert "not HU" in " ".join(g.meta["warnings"])
    # a preview of a photograph keeps its colours
    out = write_volume(v, tmp_path / "preview.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), rgb)


def test_16bit_images_and_tiff_stacks(shared_data, tmp_path):
    hu = mayo(shared_data, "L067_FD_3mm_sharp_000039.raw").data[0]
    Image.fromarray((hu + 1024).astype(np.uint16)).save(tmp_path / "ct16.png")
    as_photo = read_volume(tmp_path / "ct16.png")
    assert not as_photo.is_hu and as_photo.data.max() == hu.max() + 1024
    as_ct = read_volume(tmp_path / "ct16.png", raw_offset=-1024)
    assert as_ct.is_hu
    np.testing.assert_array_equal(as_ct.data[0], hu)
    # float32 TIFF stack written by ldct reads back as HU
    stack = as_ct.with_data(np.stack([hu, hu - 5.5]))
    back = read_volume(write_volume(stack, tmp_path / "stack.tif"))
    assert back.is_hu and back.shape == (2, 512, 512)
    np.testing.assert_array_equal(back.data, stack.data)


def test_preview_windows(shared_data, tmp_path):
    vol = read_volume(shared_data / "chest_dicom")
    soft = render(vol, window="soft", slice_index=15)
    lung = render(vol, window="lung", slice_index=15)
    hu = vol.data[15]
    # soft tissue C40/W400: -160 HU and below is black, 240 HU and above white, 40 HU mid grey
    assert np.all(soft[hu <= -160] == 0) and np.all(soft[hu >= 240] == 255)
    # lung C-600/W1500 = [-1350, 150] HU: lung parenchyma (black in soft) spreads over grey levels
    lung_tissue = (hu > -900) & (hu < -500)
    assert lung_tissue.sum() > 10000 and np.all(soft[lung_tissue] == 0)
    assert np.all((lung[lung_tissue] > 0) & (lung[lung_tissue] < 255)) and lung[lung_tissue].std() > 10
    np.testing.assert_allclose(lung, np.round(np.clip((hu + 1350) / 1500, 0, 1) * 255), atol=1)
    p = write_volume(vol, tmp_path / "p.png", window=parse_window("40,400"), slice_index=15)
    np.testing.assert_array_equal(np.asarray(Image.open(p)), soft)
    assert DISPLAY_WINDOWS["bone"].centre == 400 and DISPLAY_WINDOWS["brain"].width == 80
    with pytest.raises(Exception, match="out of range"):
        render(vol, slice_index=30)
