"""Recipes: bundled recipes resolve with published sizes; every wrong key names itself and the allowed keys."""

from __future__ import annotations

import pytest
import yaml

from ldct.cli import main
from ldct.engine.config import (
    apply_overrides,
    bundled_recipes,
    dump_recipe,
    load_recipe,
    validate_recipe,
)
from ldct.errors import LdctError

PUBLISHED = {
    "redcnn": ("redcnn", {"channels": 96, "kernel_size": 5}),
    "unet": ("unet", {"width": 64, "depth": 4}),
    "resnet": ("resnet", {"width": 64, "num_blocks": 16}),
    "autoencoder": ("autoencoder", {"channels": [64, 128, 256, 512, 512]}),
    "nafnet": ("nafnet", {"width": 32, "enc_blk_nums": [2, 2, 4, 8], "middle_blk_num": 12}),
    "dncnn": ("dncnn", {"depth": 17, "width": 64, "batch_norm": True}),
}


def test_bundled_recipes_resolve_with_published_sizes():
    assert set(PUBLISHED) <= set(bundled_recipes())
    for name, (net, sizes) in PUBLISHED.items():
        r = load_recipe(name)
        assert r["method"] == "supervised"
        assert r["args"]["net"]["name"] == net
        for k, v in sizes.items():
            assert r["args"]["net"][k] == v, (name, k)
        # defaults are filled in everywhere, so config.yaml is complete on its own
        assert r["args"]["net"]["in_channels"] == 1
        assert r["train"]["precision"] == "32-true" and r["train"]["keep_checkpoints"] >= 1
        assert r["data"]["doses"] == [0.25] and r["data"]["hu_window"] == [-1000.0, 1000.0]
        # the resolved recipe round-trips through YAML unchanged
        assert validate_recipe(yaml.safe_load(dump_recipe(r))) == r


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.max_step=3", "unknown key 'train.max_step' (did you mean 'max_steps'?); allowed: accelerator"),
        ("args.net.widht=8", "unknown key 'args.net.widht' (did you mean 'width'?); allowed: dec_blk_nums"),
        ("args.lrr=0.1", "unknown key 'args.lrr' (did you mean 'lr'?); allowed: alpha, betas, loss, lr"),
        ("data.patch_sise=32", "patch_sise"),
        ("args.net.name=nafnett", "unknown network 'nafnett' (did you mean 'nafnet'?)"),
        ("args.loss=l1_ssmi", "unknown loss 'l1_ssmi' (did you mean 'l1_ssim'?)"),
        ("methd=x", "unknown key 'methd' (did you mean 'method'?); allowed: args, data, description, method, train"),
        ("method=supervisd", "unknown method 'supervisd' (did you mean 'supervised'?)"),
        ("train.precision=fp16", "train.precision"),
        ("args.lr=fast", "args.lr must be a number"),
        ("train.batch_size=0", "train.batch_size must be a whole number >= 1"),
    ],
)
def test_wrong_keys_and_values_name_themselves(override, needle):
    with pytest.raises(LdctError) as err:
        load_recipe("nafnet", [override])
    assert needle in str(err.value)
    assert "nafnet.yaml" in str(err.value)  # the file is named


def test_data_typo_lists_allowed_keys():
    with pytest.raises(LdctError) as err:
        load_recipe("unet", ["data.patch_sise=32"])
    msg = str(err.value)
    assert "did you mean 'patch_size'" in msg and "doses" in msg


def test_overrides_are_yaml_and_coerced():
    r = load_recipe("nafnet", ["args.lr=2e-4", "train.max_steps=7", "args.net.enc_blk_nums=[1, 1]",
                               "args.net.dec_blk_nums=[1, 1]", "args.loss.alpha=0.5", "train.precision=bf16"])
    assert r["args"]["lr"] == pytest.approx(2e-4) and isinstance(r["args"]["lr"], float)  # YAML reads 2e-4 as str
    assert r["train"]["max_steps"] == 7
    assert r["args"]["net"]["enc_blk_nums"] == [1, 1]
    loss = r["args"]["loss"]  # a name became a spec with kwargs (defaults filled in)
    assert loss["name"] == "l1_ssim" and loss["alpha"] == 0.5
    assert r["train"]["precision"] == "bf16-mixed"
    with pytest.raises(LdctError, match="use key.sub=value"):
        apply_overrides({}, ["train.max_steps"])


def test_recipe_from_yaml_path_and_unknown_name(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("method: supervised\nargs:\n  net: {name: dncnn, depth: 5}\ntrain: {max_steps: 3}\n")
    r = load_recipe(str(p))
    assert r["args"]["net"]["depth"] == 5 and r["args"]["net"]["width"] == 64 and r["train"]["max_steps"] == 3
    with pytest.raises(LdctError, match=r"unknown recipe 'nafnte' \(did you mean 'nafnet'\?\); bundled:"):
        load_recipe("nafnte")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: supervised\nargs: {net: [unclosed\n")
    with pytest.raises(LdctError, match="not valid YAML at line"):
        load_recipe(str(bad))
    with pytest.raises(LdctError, match="recipe file not found"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_cli_wrong_key_is_one_line_exit_2(capsys, tmp_path):
    code = main(["train", "dncnn", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--set", "train.batch_sise=4"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("ldct: error: ") and "train.batch_sise" in err and "batch_size" in err
    assert not (tmp_path / "run").exists()


def test_cli_missing_data_path_exit_2(capsys, tmp_path):
    code = main(["train", "dncnn", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nope" in err and "not found" in err and len(err.splitlines()) == 1
