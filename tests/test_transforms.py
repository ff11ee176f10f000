"""ldct.transforms in plain Python and inside a real MONAI pipeline (LoadImaged -> ... -> Denoised)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldct.errors import LdctError
from ldct.io import read_volume
from ldct.metrics import noise_std_hu
from ldct.transforms import Denoised, SimulateLowDosed


def test_simulate_low_dose_on_plain_arrays(sample_dicom):
    vol = read_volume(sample_dicom)
    sl = vol.data[10]
    spacing = float(np.mean(vol.spacing[1:]))
    t = SimulateLowDosed("image", dose=0.25, pixel_spacing_mm=spacing, seed=3, output_keys="low")
    d = t({"image": sl, "label": 7})
    assert d["image"] is sl and d["label"] == 7  # the input key kept, the rest untouched
    low = d["low"]
    assert low.shape == sl.shape and low.dtype == np.float32
    added = float(np.std((low - sl)[200:300, 200:300]))
    assert 10 < added < 60  # a quarter dose adds noise of the order of the scan's own (14 HU) x sqrt(3)
    again = SimulateLowDosed("image", dose=0.25, pixel_spacing_mm=spacing, seed=3, output_keys="low")(
        {"image": sl})["low"]
    assert np.array_equal(low, again)  # seeded: reproducible
    fresh = t({"image": sl})["low"]
    assert not np.array_equal(low, fresh)  # a new draw on each call (augmentation)
    assert SimulateLowDosed("ct", pixel_spacing_mm=spacing, allow_missing_keys=True)({"image": sl}) == {"image": sl}
    with pytest.raises(KeyError, match="ct"):
        SimulateLowDosed("ct", pixel_spacing_mm=spacing)({"image": sl})
    with pytest.raises(LdctError, match="spacing"):
        SimulateLowDosed("image")({"image": sl})
    with pytest.raises(LdctError, match="dose"):
        SimulateLowDosed("image", dose=0)


def test_transforms_in_a_monai_pipeline(sample_dicom, tmp_path):
    """LoadImaged + EnsureChannelFirstd + CopyItemsd + SimulateLowDosed + Denoised on a NIfTI volume: the
    metadata survives, the denoised image is closer to the normal dose than the low dose is."""
    from monai.data import MetaTensor
    from monai.transforms import Compose, CopyItemsd, EnsureChannelFirstd, LoadImaged

    from ldct.io import write_volume

    vol = read_volume(sample_dicom)
    path = write_volume(_sub(vol), tmp_path / "ct.nii.gz")
    pipeline = Compose([
        LoadImaged("image", image_only=False),
        EnsureChannelFirstd("image"),
        CopyItemsd("image", names="target"),
        SimulateLowDosed("image", dose=0.25, seed=0),
        Denoised("image", output_keys="denoised"),
    ])
    d = pipeline({"image": str(path)})
    img, den, ref = d["image"], d["denoised"], d["target"]
    assert isinstance(img, MetaTensor) and isinstance(den, MetaTensor)
    assert img.shape == den.shape == ref.shape and img.shape[0] == 1 and img.shape[-1] == 3
    assert str(den.meta["filename_or_obj"]).endswith("ct.nii.gz")
    assert den.meta["ldct_model"] == "default" and img.meta["ldct_dose"] == 0.25
    assert torch.allclose(den.affine, ref.affine)
    # (1, H, W, D) -> slices along D; compare in soft tissue against the normal dose
    as_zhw = [np.moveaxis(np.asarray(x)[0], -1, 0) for x in (img, den, ref)]
    low_err = noise_std_hu(as_zhw[0], as_zhw[2])
    den_err = noise_std_hu(as_zhw[1], as_zhw[2])
    assert den_err < 0.7 * low_err


def _sub(vol):
    import dataclasses

    return dataclasses.replace(vol, data=vol.data[9:12], positions=vol.positions[9:12])


def test_ldct_datasets_feed_a_monai_dataloader(shared_data, tmp_path):
    """The patch datasets of ``ldct.data.build_datasets`` (split by patient) work in MONAI's DataLoader with
    a MONAI transform, no ldct engine involved."""
    from helpers_pairs import copy_real_pairs
    from monai.data import DataLoader
    from monai.transforms import RandGaussianNoised

    from ldct.data.build import build_datasets

    root = copy_real_pairs(shared_data, tmp_path / "pairs")
    b = build_datasets({"root": str(root), "kind": "paired_dirs", "patch_size": 64, "samples_per_epoch": 8,
                        "split": {"val": 0, "test": ["L286"], "seed": 0}}, run_dir=None)
    assert {r.patient_id for r in b.train.records}.isdisjoint({r.patient_id for r in b.test.records})

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return len(b.train)

        def __getitem__(self, i):
            return RandGaussianNoised(keys="ld", prob=1.0, std=0.01)(b.train[i])

    batch = next(iter(DataLoader(Noisy(), batch_size=4)))
    assert batch["ld"].shape == batch["nd"].shape == (4, 1, 64, 64)
    assert set(batch["patient_id"]) <= {"L096", "L143"}
