"""The data: recipe section: unknown keys name themselves and the allowed keys; bad values are caught."""

from __future__ import annotations

import pytest

from ldct.data.config import DEFAULTS, parse_data_config, validate_data_config
from ldct.errors import LdctError


def test_defaults_resolve_and_round_trip():
    cfg = parse_data_config(None)
    assert cfg.doses == [0.25] and cfg.patch_size == 64 and (cfg.hu_window.lo, cfg.hu_window.hi) == (-1000, 1000)
    resolved = validate_data_config({"doses": [0.1, 0.5], "patch_size": 96, "cache": "/tmp/shared-cache"})
    again = parse_data_config(resolved)
    assert again.doses == [0.1, 0.5] and again.cache_dir == "/tmp/shared-cache" and again.cache is True
    assert set(resolved) == set(DEFAULTS)


def test_unknown_key_names_itself_and_allowed_keys():
    with pytest.raises(LdctError) as e:
        parse_data_config({"patchsize": 64}, source="recipe.yaml")
    msg = str(e.value)
    assert "'patchsize'" in msg and "patch_size" in msg and "allowed keys" in msg and "recipe.yaml" in msg
    with pytest.raises(LdctError, match="data.split.'tset'.*allowed keys: val, test, seed, file"):
        parse_data_config({"split": {"tset": ["L067"]}})
    with pytest.raises(LdctError, match="data.raw.'shap'"):
        parse_data_config({"raw": {"shap": [512, 512]}})


@pytest.mark.parametrize("section,needle", [
    ({"doses": [1.5]}, "data.doses"),
    ({"dose_range": [0.7, 0.1]}, "data.dose_range"),
    ({"kind": "folders"}, "data.kind"),
    ({"patch_size": 65, "downsample": 4}, "multiple of downsample"),
    ({"channels": 2}, "data.channels"),
    ({"hu_window": [1000, -1000]}, "data.hu_window"),
    ({"split": {"val": 1.5}}, "data.split.val"),
    ({"body_fraction": 2}, "data.body_fraction"),
    ({"patient_regex": "L\\d+"}, "capture group"),
    ({"augment": "yes"}, "data.augment"),
])
def test_bad_values(section, needle):
    with pytest.raises(LdctError, match=needle.replace(".", r"\.")):
        parse_data_config(section)


def test_dose_range_grid():
    cfg = parse_data_config({"dose_range": [0.1, 0.7], "dose_steps": 4})
    assert cfg.train_doses() == pytest.approx([0.1, 0.3, 0.5, 0.7])
