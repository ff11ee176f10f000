"""Patch sampling: crops land on the body, and flips/rotations keep low/normal-dose pairs aligned."""

from __future__ import annotations

import numpy as np
import pytest

from ldct.data.patches import (
    apply_crop,
    augment_pair,
    body_mask,
    check_size,
    dihedral,
    sample_crop,
    uniform_crop,
)
from ldct.errors import LdctError
from ldct.io import read_volume


@pytest.fixture(scope="module")
def chest_slice(shared_data):
    vol = read_volume(shared_data / "chest_dicom")
    return vol.data[len(vol.data) // 2]  # (512, 512) HU


def _area_down(x: np.ndarray, f: int) -> np.ndarray:
    c, h, w = x.shape
    return x.reshape(c, h // f, f, w // f, f).mean(axis=(2, 4))


def test_crops_are_biased_toward_the_body(chest_slice):
    mask = body_mask(chest_slice)
    assert 0.2 < mask.mean() < 0.8  # a real slice with air around the patient
    rng = np.random.default_rng(0)
    biased = [sample_crop(mask, 64, rng, min_body=0.3).body_fraction for _ in range(300)]
    uniform = []
    for _ in range(300):
        c = uniform_crop(mask.shape, 64, rng)
        uniform.append(mask[c.y : c.y + 64, c.x : c.x + 64].mean())
    biased, uniform = np.asarray(biased), np.asarray(uniform)
    assert np.mean(uniform < 0.05) > 0.04  # uniform crops see only air now and then (about 9 % here)
    assert np.mean(biased < 0.05) == 0.0  # body-biased crops never do
    assert np.mean(uniform < 0.3) > 0.2  # mostly-air crops: about 30 % uniform ...
    assert np.mean(biased < 0.3) < 0.02  # ... and none biased


def test_reported_body_fraction_matches_the_crop(chest_slice):
    mask = body_mask(chest_slice)
    rng = np.random.default_rng(1)
    for _ in range(20):
        c = sample_crop(mask, 48, rng, scale=4)
        assert c.y % 4 == 0 and c.x % 4 == 0
        assert c.body_fraction == pytest.approx(mask[c.y : c.y + 48, c.x : c.x + 48].mean())


def test_flips_and_rotations_keep_pairs_aligned(chest_slice):
    rng = np.random.default_rng(2)
    nd = chest_slice[None, 100:228, 120:248].copy()  # (1, 128, 128) HU
    noise = rng.normal(0, 40, nd.shape).astype(np.float32)
    ld = nd + noise
    used = set()
    for _ in range(40):
        seed = int(rng.integers(1 << 30))
        a_ld, a_nd = augment_pair(ld, nd, np.random.default_rng(seed))
        k, flip = _params(seed)  # the transform augment_pair drew with this seed
        used.add((k, flip))
        np.testing.assert_array_equal(a_nd, dihedral(nd, k, flip))
        np.testing.assert_allclose(a_ld - a_nd, dihedral(noise, k, flip), atol=1e-3)
    assert len(used) >= 6  # most of the 8 transforms occur
    # the 8 transforms are distinct on a real image
    outs = {dihedral(nd, k, f).tobytes() for k in range(4) for f in (False, True)}
    assert len(outs) == 8


def _params(seed: int) -> tuple[int, bool]:
    r = np.random.default_rng(seed)
    return int(r.integers(4)), bool(r.integers(2))


def test_super_resolution_crop_and_augment_stay_aligned(chest_slice):
    nd = chest_slice[None].copy()
    ld = _area_down(nd, 4)  # (1, 128, 128)
    rng = np.random.default_rng(3)
    mask = body_mask(nd)
    for _ in range(10):
        crop = sample_crop(mask, 64, rng, scale=4)
        nd_p, ld_p = apply_crop(nd, ld, crop, scale=4)
        assert nd_p.shape == (1, 64, 64) and ld_p.shape == (1, 16, 16)
        np.testing.assert_allclose(_area_down(nd_p, 4), ld_p, atol=1e-3)
        a_ld, a_nd = augment_pair(ld_p, nd_p, rng)
        np.testing.assert_allclose(_area_down(a_nd, 4), a_ld, atol=1e-3)


def test_image_smaller_than_patch_names_the_file():
    with pytest.raises(LdctError, match="smaller than data.patch_size=128") as e:
        check_size((1, 101, 122), 128, "/data/abdomen_3mm.nii.gz")
    assert "/data/abdomen_3mm.nii.gz" in str(e.value)
    check_size((1, 128, 130), 128, "ok")
