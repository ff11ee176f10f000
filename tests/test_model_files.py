"""``ldct.models.files``: metadata values are checked before any network is built (one line naming the
metadata file), and the inference weights of a checkpoint come out without its other networks."""

from __future__ import annotations

import json
import shutil

import pytest

from ldct.denoiser import Denoiser
from ldct.errors import LdctError
from ldct.model_zoo import bundled_dir


@pytest.mark.parametrize("change, words", [
    ({"data_summary": {"full_scale": "abc"}}, "data_summary.full_scale"),
    ({"data_summary": {"full_scale": -5.0}}, "data_summary.full_scale"),
    ({"hu_window": [240.0, -160.0]}, "hu_window"),
    ({"hu_window": [-1000.0, float("inf")]}, "hu_window"),
    ({"reference_noise_hu": "loud"}, "reference_noise_hu"),
])
def test_bad_metadata_values_are_one_line_naming_the_file(tmp_path, change, words, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    shutil.copyfile(bundled_dir() / "default.safetensors", model / "weights.safetensors")
    meta = json.loads((bundled_dir() / "default.json").read_text())
    for k, v in change.items():
        meta[k] = {**meta.get(k, {}), **v} if isinstance(v, dict) else v
    (model / "meta.json").write_text(json.dumps(meta))
    import ldct.models.specs as specs

    built = []
    monkeypatch.setattr(specs, "build_network", lambda *a, **k: built.append(a) or pytest.fail("built"))
    with pytest.raises(LdctError) as exc:
        Denoiser.load(str(model))
    assert words in str(exc.value) and str(model / "meta.json") in str(exc.value)
    assert not built
