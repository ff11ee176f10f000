"""``ldct train RECIPE --init MODEL``: start from a trained model's weights (fine-tuning to a new scanner)."""

from __future__ import annotations

import pytest
from helpers_engine import bundle, write_paired_folders
from safetensors.torch import load_file

from ldct import Denoiser
from ldct.cli import main
from ldct.engine.config import load_recipe, validate_recipe
from ldct.engine.loop import train


def _default_like(steps: int, lr: float) -> dict:
    r = load_recipe("default", [])
    return validate_recipe({"method": "supervised", "args": {**r["args"], "lr": lr}, "data": {"patch_size": 32},
                            "train": {"max_steps": steps, "batch_size": 4, "val_every": 0, "ckpt_every": steps,
                                      "sample_every": 0, "log_every": 1, "accelerator": "cpu"}})


def test_init_starts_from_the_bundled_weights_and_moves_from_there(tmp_path, shared_data):
    ref = {k.removeprefix("net."): v for k, v in Denoiser.load("default").net.state_dict().items()}
    run = train(_default_like(2, 1e-4), data=None, out=tmp_path / "ft", datasets=bundle(shared_data), init="default")
    got = {k.removeprefix("net."): v for k, v in load_file(str(run / "checkpoints" / "step_0000002" /
                                                                "weights.safetensors")).items()}
    assert got.keys() == ref.keys()
    moved = [float((got[k] - ref[k]).abs().max()) for k in ref]
    assert max(moved) > 0  # it trained
    assert max(moved) < 1e-2  # two Adam steps of 1e-4 from the bundled weights, not a fresh start
    scratch = train(_default_like(2, 1e-4), data=None, out=tmp_path / "s", datasets=bundle(shared_data))
    s = {k.removeprefix("net."): v for k, v in load_file(str(scratch / "checkpoints" / "step_0000002" /
                                                             "weights.safetensors")).items()}
    assert max(float((s[k] - ref[k]).abs().max()) for k in ref) > 0.1
    cfg = (run / "config.yaml").read_text()
    assert "init: default" in cfg  # the resolved recipe says where the weights came from


def test_init_with_another_network_is_one_line(shared_data, tmp_path, capsys):
    data = write_paired_folders(shared_data, tmp_path / "d", size=64)
    run = tmp_path / "run"
    assert main(["train", "dncnn", "--data", str(data), "-o", str(run), "--init", "default"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot start from default" in err[0] and "DnCNN" in err[0], err
    assert not run.exists()
    assert main(["train", "dncnn", "--data", str(data), "-o", str(run), "--init", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err and not run.exists()


def test_bad_init_value(tmp_path):
    with pytest.raises(Exception, match="train.init"):
        validate_recipe({"method": "supervised", "args": {"net": {"name": "dncnn"}}, "train": {"init": 3}})
