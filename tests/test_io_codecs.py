"""Compressed transfer syntaxes decode to the same HU as the uncompressed original."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from ldct.io import read_volume


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["RLE", "J2K"])
def test_lossless_codecs_match_original(shared_data, tmp_path, syntax):
    files = sorted((shared_data / "chest_dicom").iterdir())[5:8]
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(syntax)  # RLE: pydicom's encoder; J2K: pylibjpeg-openjpeg
        ds.save_as(tmp_path / f.name)
    assert pydicom.dcmread(tmp_path / files[0].name).file_meta.TransferSyntaxUID == syntax
    original = read_volume(files)
    compressed = read_volume(tmp_path)
    assert compressed.meta["transfer_syntax"] == syntax.name
    np.testing.assert_array_equal(compressed.data, original.data)
    np.testing.assert_allclose(compressed.positions, original.positions)


def test_padding_becomes_air(shared_data):
    """GE head: PixelPaddingValue -1500 marks pixels outside the scan circle; they become -1000 HU."""
    folder = shared_data / "head_dicom_tilted"
    stored_pad = sum(int(np.sum(pydicom.dcmread(f).pixel_array == -1500)) for f in folder.iterdir())
    vol = read_volume(folder)
    assert stored_pad > 0 and vol.meta["padded_voxels"] == stored_pad
    assert int(np.sum(vol.data == -1000)) >= stored_pad and vol.data.min() >= -1024


def test_non_dicom_files_in_folder_are_skipped(shared_data, tmp_path):
    for f in sorted((shared_data / "chest_dicom").iterdir())[:4]:
        (tmp_path / "series" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / "series" / "sub" / f.name).symlink_to(f)
    (tmp_path / "series" / "README.txt").write_text("scan notes\n")
    (tmp_path / "series" / "thumbs.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    vol = read_volume(tmp_path / "series")
    assert vol.shape == (4, 512, 512)
