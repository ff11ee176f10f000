"""`--model NAME|PATH`: bundled/user models, run folders, and refusal of anything that is not safetensors."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from helpers_denoise import trained_model
from safetensors.torch import save_file

from ldct import Denoiser
from ldct.cli import main
from ldct.errors import LdctError
from ldct.model_zoo import bundled_dir, find_model, list_models


class _Trap:
    """Unpickling this creates a file: proof that a loader unpickled it."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


@pytest.fixture(scope="module")
def model_dir(shared_data, tmp_path_factory):
    return trained_model(shared_data, tmp_path_factory.getbasetemp())


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("LDCT_MODEL_DIR", str(d))
    return d


def test_model_folder_and_weights_file_load(model_dir):
    m = Denoiser.load(str(model_dir))
    assert (m.method, m.network, m.scale, m.dose_conditioned) == ("supervised", "dncnn", 1, False)
    assert (m.window.lo, m.window.hi) == (-1000.0, 1000.0)
    w = Denoiser.load(str(model_dir / "weights.safetensors"))
    x = torch.linspace(-1, 1, 64 * 64).reshape(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m.net(x), w.net(x))


def test_user_models_by_name_and_listing(model_dir, user_models):
    shutil.copytree(model_dir, user_models / "liver")
    found = {m.name: m for m in list_models()}
    assert found["liver"].where == "user" and found["liver"].network == "dncnn"
    assert found["liver"].size_mb == pytest.approx((model_dir / "weights.safetensors").stat().st_size / 1e6)
    assert found["liver"].doses == "0.25" and "Mayo" in found["liver"].trained_on
    assert Denoiser.load("liver").name == "liver"
    with pytest.raises(LdctError, match="unknown model 'kidney'.*liver"):
        Denoiser.load("kidney")


def test_models_command_lists_user_models(model_dir, user_models, capsys):
    shutil.copytree(model_dir, user_models / "liver")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "liver" in out and "dncnn" in out and "supervised" in out


def test_install_user_model_from_a_run(model_dir, user_models, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "checkpoints" / "step_0000060")
    (run / "checkpoints" / "last").write_text("step_0000060\n")
    assert main(["models", "--add", str(run), "--name", "kidney-v1.2"]) == 0
    assert (user_models / "kidney-v1.2" / "weights.safetensors").is_file()
    m = Denoiser.load("kidney-v1.2")  # a name with dots is still a name
    ref = Denoiser.load(str(model_dir))
    x = torch.linspace(-1, 1, 48 * 48).reshape(1, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(m.net(x), ref.net(x))
    assert main(["models", "--add", str(run), "--name", "kidney-v1.2"]) == 2  # exists, no --overwrite
    assert main(["models", "--add", str(run), "--name", "../evil"]) == 2
    capsys.readouterr()


def test_bundling_a_default_model(model_dir, user_models, tmp_path, monkeypatch, capsys):
    """How the shipped default is made: Denoiser.load(RUN).install("default", bundled=True) (here into a copy)."""
    import ldct.model_zoo as zoo

    monkeypatch.setattr(zoo, "bundled_dir", lambda: tmp_path / "weights")
    w = Denoiser.load(model_dir).install("default", bundled=True)
    assert w == tmp_path / "weights" / "default.safetensors" and (tmp_path / "weights" / "default.json").is_file()
    m = Denoiser.load(None)
    assert (m.name, m.network) == ("default", "dncnn")
    assert [(i.name, i.where) for i in list_models()] == [("default", "bundled")]
    assert main(["models"]) == 0
    assert "bundled" in capsys.readouterr().out


def test_default_model_bundled_or_clear_error(user_models):
    if (bundled_dir() / "default.safetensors").is_file():
        m = Denoiser.load(None)
        assert m.name == "default" and m.net is not None
    else:
        with pytest.raises(LdctError, match="no bundled model named 'default' is installed"):
            Denoiser.load(None)


def test_run_folder_loads_best_checkpoint(model_dir, tmp_path):
    run = tmp_path / "run"
    ck = run / "checkpoints" / "step_0000060"
    shutil.copytree(model_dir, ck)
    meta = json.loads((ck / "meta.json").read_text())
    (run / "checkpoints" / "last").write_text("step_0000060\n")
    assert Denoiser.load(str(run)).network == meta["network"]["name"]


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".safetensors", ""])
def test_pickles_are_refused_and_never_unpickled(tmp_path, suffix, capsys):
    sentinel = tmp_path / "unpickled.txt"
    bad = tmp_path / f"model{suffix}"
    if suffix in (".pt", ".pth"):
        torch.save({"state": torch.zeros(2), "trap": _Trap(str(sentinel))}, bad)  # zip archive
    else:
        bad.write_bytes(pickle.dumps({"trap": _Trap(str(sentinel))}, protocol=4))
    target = bad if suffix else tmp_path
    with pytest.raises(LdctError, match="is a pickle/PyTorch archive; ldct never unpickles"):
        find_model(str(target)) if suffix else Denoiser.load(str(target))
    np.save(tmp_path / "in.npy", np.zeros((64, 64), np.float32))
    assert main(["denoise", str(tmp_path / "in.npy"), "-o", str(tmp_path / "o.npy"), "--model", str(target)]) == 2
    assert not sentinel.exists()


def test_pickle_check_is_by_content_not_name(tmp_path):
    fake = tmp_path / "weights.safetensors"
    fake.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(LdctError, match="is a pickle/PyTorch archive; ldct never unpickles"):
        find_model(str(fake))


def test_invalid_safetensors_and_foreign_safetensors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(LdctError, match="not a valid safetensors"):
        find_model(str(junk))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))  # valid safetensors, no ldct metadata
    with pytest.raises(LdctError, match="not an ldct model"):
        Denoiser.load(str(foreign))
    other = tmp_path / "model.onnx"
    other.write_bytes(os.urandom(64))
    with pytest.raises(LdctError, match="not an ldct model"):
        find_model(str(other))
    with pytest.raises(LdctError, match="model not found"):
        find_model(str(tmp_path / "missing.safetensors"))


def test_weights_that_do_not_fit_the_metadata(model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["network"]["width"] = 32
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LdctError, match="do not fit"):
        Denoiser.load(str(bad))


def test_folder_with_only_a_pickle(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    torch.save({"w": torch.zeros(1)}, d / "model.pth")
    with pytest.raises(LdctError, match="is a pickle/PyTorch archive; ldct never unpickles"):
        Denoiser.load(str(d))
    np.save(d / "x.npy", np.zeros(2))
    (d / "model.pth").unlink()
    with pytest.raises(LdctError, match="no .safetensors"):
        Denoiser.load(str(d))
