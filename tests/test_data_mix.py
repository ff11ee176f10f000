"""``data.mix``: extra training-only sources beside the main data (e.g. real pairs + simulation from every
normal-dose scan), drawn by weight, and never a patient that the main split holds out."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_pairs import copy_real_pairs

from ldct.data import build_datasets
from ldct.data.config import parse_data_config
from ldct.errors import LdctError


def _normal_dose(shared_data, root):
    """Normal-dose scans to simulate from: two slices of the sample abdomen, and L286's full dose (a patient
    the main split holds out)."""
    (root / "abdomen").mkdir(parents=True)
    for f in sorted((shared_data / "abdomen_dicom").iterdir())[:2]:
        (root / "abdomen" / f.name).write_bytes(f.read_bytes())
    (root / "L286").mkdir()
    f = sorted((shared_data.parent / "real_pairs" / "mayo" / "L286" / "full_3mm_sharp").iterdir())[1]
    (root / "L286" / f.name).write_bytes(f.read_bytes())
    return root


@pytest.mark.parametrize("mix, message", [
    ([{"root": "x"}], "data.mix[0].weight: expected its share"),
    ([{"root": "x", "weight": 1.5}], "data.mix[0].weight"),
    ([{"weight": 0.5}], "data.mix[0].root"),
    ([{"root": "x", "weight": 0.5, "patch_size": 32}], "unknown key data.mix[0].'patch_size'"),
    ([{"root": "x", "weight": 0.5, "kind": "photos"}], "data.mix[0].kind"),
    ([{"root": "x", "weight": 0.5, "doses": [3]}], "data.mix[0].doses"),
    ([{"root": "x", "weight": 0.6}, {"root": "y", "weight": 0.4}], "the weights add up to 1"),
    ("x", "data.mix: expected a list"),
])
def test_bad_mix_is_named(mix, message):
    with pytest.raises(LdctError, match=None) as exc:
        parse_data_config({"kind": "paired_dirs", "mix": mix})
    assert message in str(exc.value)


def test_mix_inherits_the_parent_and_round_trips():
    cfg = parse_data_config({"kind": "paired_dirs", "patch_size": 96, "doses": [0.25],
                             "mix": [{"root": "nd", "kind": "simulated", "weight": 0.4, "sim": {"mode": "gaussian"}}]})
    sub, w = cfg.mix[0]
    assert (sub.patch_size, sub.doses, sub.kind, sub.sim["mode"], w) == (96, [0.25], "simulated", "gaussian", 0.4)
    again = parse_data_config(cfg.raw_dict)
    assert again.mix[0][1] == 0.4 and again.mix[0][0].sim == sub.sim


def test_mix_draws_by_weight_and_never_trains_on_held_out_patients(shared_data, tmp_path):
    pairs = copy_real_pairs(shared_data, tmp_path / "pairs")
    nd = _normal_dose(shared_data, tmp_path / "nd")
    cfg = {"root": str(pairs), "kind": "paired_dirs", "patch_size": 64, "doses": [0.25], "samples_per_epoch": 400,
           "split": {"test": ["L286"], "val": 0}, "cache": False,
           "mix": [{"root": str(nd), "kind": "simulated", "weight": 0.3,
                    "sim": {"mode": "gaussian", "noise_sigma": 20.0}}]}
    bundle = build_datasets(cfg, run_dir=tmp_path / "run", seed=0, progress=False)
    (info,) = bundle.summary["mix"]
    assert info["dropped_held_out"] == ["L286"] and "L286" not in info["patients"]
    assert any("L286" in w and "left out" in w for w in bundle.summary["warnings"])
    items = [bundle.train[i] for i in range(300)]
    sources = np.array([it["source"] for it in items])
    assert 0.2 < sources.mean() < 0.4  # weight 0.3 (binomial, n=300: sd 0.026)
    assert {it["patient_id"] for it in items} <= {"L096", "L143"} | set(info["patients"])
    assert "L286" not in {it["patient_id"] for it in items}
    # the simulated source's patches carry its simulated noise: noise_sigma is the full dose's std, so the
    # added noise at 25 % dose has std 20 * sqrt(1/0.25 - 1) = 34.6 HU
    sim = [it for it in items if it["source"] == 1]
    w = bundle.config.hu_window
    diff_hu = np.concatenate([((it["ld"] - it["nd"]).numpy() * (w.hi - w.lo) / 2).ravel() for it in sim[:20]])
    assert 30 < diff_hu.std() < 39
    # same seed, epoch and index: the same patch from the same source
    assert bundle.train[7]["source"] == items[7]["source"]
    assert np.array_equal(bundle.train[7]["ld"].numpy(), items[7]["ld"].numpy())


def test_mix_source_with_only_held_out_patients_is_refused(shared_data, tmp_path):
    pairs = copy_real_pairs(shared_data, tmp_path / "pairs")
    nd = tmp_path / "nd"
    (nd / "L286").mkdir(parents=True)
    f = sorted((shared_data.parent / "real_pairs" / "mayo" / "L286" / "full_3mm_sharp").iterdir())[1]
    (nd / "L286" / f.name).write_bytes(f.read_bytes())
    cfg = {"root": str(pairs), "kind": "paired_dirs", "split": {"test": ["L286"], "val": 0},
           "mix": [{"root": str(nd), "kind": "simulated", "weight": 0.3}]}
    with pytest.raises(LdctError, match=r"data.mix\[0\]: no training slices left"):
        build_datasets(cfg, run_dir=tmp_path / "run", seed=0, progress=False)
