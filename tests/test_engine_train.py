"""The training engine on real CT crops: it learns, checkpoints, resumes exactly, stops on NaN, refuses
foreign or pickled checkpoints, and exports inference models."""

from __future__ import annotations

import csv
import json
import math
import shutil
import signal

import pytest
import torch
from helpers_engine import bundle, tiny_recipe
from safetensors.torch import load_file, save_file

from ldct import Denoiser
from ldct.engine.checkpoint import load_checkpoint, load_train_state
from ldct.engine.loop import TrainingDiverged, TrainingInterrupted, train
from ldct.engine.validate import validate
from ldct.errors import LdctError


def _rows(run_dir):
    with open(run_dir / "logs" / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _col(rows, key):
    return [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in ("", None)]


@pytest.fixture(scope="module")
def run40(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("engine") / "run"
    data = bundle(shared_data)
    recipe = tiny_recipe(max_steps=40)
    assert train(recipe, data=None, out=out, datasets=data) == out.absolute()
    return out, data, recipe


def test_short_run_learns_and_writes_the_run_folder(run40):
    run_dir, _, recipe = run40
    rows = _rows(run_dir)
    loss = _col(rows, "loss")
    assert [s for s, _ in loss] == [5, 10, 15, 20, 25, 30, 35, 40]  # every log_every steps, each step once
    first, last = loss[0][1], sum(v for _, v in loss[-2:]) / 2
    assert last < 0.92 * first, loss  # measured: 0.86
    psnr = dict(_col(rows, "val/psnr_soft_tissue"))
    low_dose = dict(_col(rows, "val/input_psnr_soft_tissue"))[20]
    assert set(psnr) == {20, 40}
    assert psnr[40] > low_dose + 1.0, (psnr, low_dose)  # beats its noisy input on other slices (measured +2.1 dB)
    assert all(math.isfinite(v) for _, v in _col(rows, "val/ssim_full"))

    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_0000030", "step_0000040"]  # keep_checkpoints=2
    assert (ckpts / "last").read_text().strip() == "step_0000040"
    assert (ckpts / "best").read_text().strip() in ("step_0000020", "step_0000040")
    from ldct.engine.checkpoint import last_step
    from ldct.models.files import resolve_weights  # the pointer files are model paths too

    assert last_step(run_dir) == 40 and last_step(run_dir / "no_such_run") == -1

    assert resolve_weights(ckpts / "last") == ckpts / "step_0000040" / "weights.safetensors"
    assert resolve_weights(ckpts / "best").parent.name == (ckpts / "best").read_text().strip()
    for name in ("config.yaml", "figures/loss.png", "figures/val_metrics.png", "figures/samples/step_0000040.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert list((run_dir / "logs" / "tensorboard").glob("events.out.tfevents.*"))

    meta = json.loads((ckpts / "step_0000040" / "meta.json").read_text())
    assert meta["kind"] == "ldct-checkpoint" and meta["method"] == "supervised" and meta["step"] == 40
    assert meta["network"]["name"] == "nafnet" and meta["network"]["width"] == 8
    assert meta["hu_window"] == [-1000.0, 1000.0]
    assert meta["metrics"]["val/psnr_soft_tissue"] == pytest.approx(psnr[40])
    assert meta["recipe"]["args"] == recipe["args"] and meta["data_summary"]["source"].startswith("mayo")

    state = torch.load(ckpts / "step_0000040" / "train_state.pt", weights_only=True)  # no arbitrary unpickling
    assert state["step"] == 40 and state["sampler"] == {"epoch": 4, "batch_in_epoch": 8}  # 8 batches per epoch
    adam = state["optimizers"]["net"]["state"][0]
    assert int(adam["step"]) == 40 and adam["exp_avg"].abs().sum() > 0


def test_loaded_checkpoint_reproduces_validation_and_exports(run40, tmp_path):
    run_dir, data, _ = run40
    method, meta = load_checkpoint(run_dir / "checkpoints" / "step_0000040")
    from lightning.fabric import Fabric

    metrics, _ = validate(method, data.val, fabric=Fabric(accelerator="cpu", devices=1), window=_window(meta))
    assert metrics["val/psnr_soft_tissue"] == pytest.approx(meta["metrics"]["val/psnr_soft_tissue"], abs=1e-4)

    out = Denoiser.load(run_dir / "checkpoints" / "step_0000040").save(tmp_path / "model")
    weights = load_file(str(out / "weights.safetensors"))
    assert weights and all(k.startswith("net.") for k in weights)
    exported = Denoiser.load(out)
    emeta = exported.meta
    assert emeta["kind"] == "ldct-model" and emeta["network"] == meta["network"]
    with pytest.raises(LdctError, match="Denoiser.load"):  # an exported model holds the denoising network only
        load_checkpoint(out)
    x = data.val[0]["ld"][None]
    with torch.no_grad():
        ref = method.denoiser().forward(x)
        assert torch.equal(exported.forward(x), ref)

    # a lone weights file carries its metadata in the safetensors header
    lone = tmp_path / "lone" / "denoiser.safetensors"
    lone.parent.mkdir()
    shutil.copy(out / "weights.safetensors", lone)
    alone = Denoiser.load(lone)
    with torch.no_grad():
        assert torch.equal(alone.forward(x), ref)


def _window(meta):
    from ldct.hu import Window

    lo, hi = meta["hu_window"]
    return Window(lo, hi, "net")


def test_refuses_another_network_pickles_and_foreign_files(run40, tmp_path):
    run_dir, _, _ = run40
    src = run_dir / "checkpoints" / "step_0000040"
    for change in ({"width": 32}, {"name": "redcnn"}):
        ck = tmp_path / f"ck_{next(iter(change))}"
        shutil.copytree(src, ck)
        meta = json.loads((ck / "meta.json").read_text())
        if "name" in change:
            spec = {"name": "redcnn", "channels": 16}
        else:
            spec = {**meta["network"], **change}
        meta["network"] = meta["networks"]["net"] = spec
        meta["recipe"]["args"]["net"] = spec
        (ck / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(LdctError, match="weights do not fit the network"):
            load_checkpoint(ck)

    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("model.pt", "model.safetensors"):  # a pickle, also under a misleading name
        torch.save({"net.weight": Evil()}, tmp_path / name)
        with pytest.raises(LdctError, match="never unpickles"):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(LdctError, match="not an ldct model"):
        load_checkpoint(tmp_path / "other.safetensors")
    with pytest.raises(LdctError, match="not found"):
        load_checkpoint(tmp_path / "missing")


def test_resume_continues_exactly_after_interrupt_and_crash(tmp_path, shared_data):
    recipe = tiny_recipe(max_steps=12, ckpt_every=4, val_every=0, sample_every=0, log_every=1)
    ref = train(recipe, data=None, out=tmp_path / "ref", datasets=bundle(shared_data))
    ref_w = load_file(str(ref / "checkpoints" / "step_0000012" / "weights.safetensors"))

    run = tmp_path / "run"

    def ctrl_c_at_6(step: int) -> None:
        if step == 6:
            signal.raise_signal(signal.SIGINT)  # the real handler: finish the step, checkpoint, stop

    with pytest.raises(TrainingInterrupted) as info:
        train(recipe, data=None, out=run, datasets=bundle(shared_data), on_step=ctrl_c_at_6)
    assert info.value.step == 7 and info.value.checkpoint.name == "step_0000007"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    def crash_at_10(step: int) -> None:
        if step == 10:
            raise RuntimeError("node lost")  # a hard crash: no checkpoint at step 10

    with pytest.raises(RuntimeError, match="node lost"):
        train(recipe, data=None, out=run, datasets=bundle(shared_data), resume=True, on_step=crash_at_10)
    last = (run / "checkpoints" / "last").read_text().strip()
    assert last == "step_0000008"  # lost 2 steps, less than one checkpoint interval (4)
    resumed_state = load_train_state(run / "checkpoints" / last)
    assert resumed_state["step"] == 8 and int(resumed_state["optimizers"]["net"]["state"][0]["step"]) == 8

    train(recipe, data=None, out=run, datasets=bundle(shared_data), resume=True)
    got = load_file(str(run / "checkpoints" / "step_0000012" / "weights.safetensors"))
    assert got.keys() == ref_w.keys()
    for k in ref_w:
        assert torch.equal(got[k], ref_w[k]), k  # bit-identical to the uninterrupted run
    s_ref = load_train_state(ref / "checkpoints" / "step_0000012")["optimizers"]["net"]["state"]
    s_got = load_train_state(run / "checkpoints" / "step_0000012")["optimizers"]["net"]["state"]
    for i in s_ref:
        assert torch.equal(s_ref[i]["exp_avg_sq"], s_got[i]["exp_avg_sq"]) and int(s_got[i]["step"]) == 12
    steps = [s for s, _ in _col(_rows(run), "loss")]
    assert steps == list(range(1, 13))  # each step logged once across the three sessions
    assert [v for _, v in _col(_rows(run), "loss")] == pytest.approx([v for _, v in _col(_rows(ref), "loss")])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, shared_data):
    # 64 patches / batch 8 = 8 steps per epoch; the data turns NaN in epoch 1 (step 9)
    recipe = tiny_recipe(max_steps=20, ckpt_every=4, val_every=4, sample_every=0)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        train(recipe, data=None, out=run, datasets=bundle(shared_data, nan_from_epoch=1))
    msg = str(info.value)
    assert isinstance(info.value, LdctError)  # the CLI prints one line and exits 2
    assert "NaN/Inf at step 9" in msg and "step_0000008" in msg
    ckpts = run / "checkpoints"
    assert (ckpts / "last").read_text().strip() == "step_0000008"
    assert max(p.name for p in ckpts.glob("step_*")) == "step_0000008"
    method, meta = load_checkpoint(ckpts / "step_0000008")
    assert meta["step"] == 8
    assert all(torch.isfinite(v).all() for v in method.weights().values())


def test_run_folder_rules(run40, tmp_path, shared_data):
    run_dir, data, recipe = run40
    with pytest.raises(LdctError, match="run folder is not empty: pass --resume"):
        train(recipe, data=None, out=run_dir, datasets=data)
    changed = {**recipe, "args": {**recipe["args"], "lr": 0.5}}
    with pytest.raises(LdctError, match=r"args.lr differs from the run's config.yaml"):
        train(changed, data=None, out=run_dir, datasets=data, resume=True)
    with pytest.raises(LdctError, match="16-mixed needs a GPU"):
        train(recipe, data=None, out=tmp_path / "r", datasets=data, precision="16-mixed", accelerator="cpu")
    small = bundle(shared_data, length=4)
    with pytest.raises(LdctError, match="fewer than one batch"):
        train(recipe, data=None, out=tmp_path / "r2", datasets=small)




def test_resume_restores_the_random_streams_a_method_draws_from(tmp_path, shared_data):
    """WGAN-GP draws its gradient-penalty interpolation weights from torch's global generator every step:
    crashed at step 4 and resumed from step 3, it must match the uninterrupted run bit for bit, which only
    holds when the checkpoint's random state is restored."""
    from ldct.engine.config import validate_recipe

    recipe = validate_recipe({
        "method": "wgan_gp",
        "args": {"generator": {"name": "wgan_generator", "channels": 4, "depth": 2, "residual": True},
                 "critic": {"name": "wgan_critic", "channels": 4, "hidden": 8}, "n_critic": 1, "lr": 1e-3},
        "data": {"patch_size": 32},
        "train": {"max_steps": 6, "batch_size": 4, "val_every": 0, "ckpt_every": 3, "sample_every": 0,
                  "log_every": 1, "accelerator": "cpu"},
    })
    ref = train(recipe, data=None, out=tmp_path / "ref", datasets=bundle(shared_data))

    def crash_at_4(step: int) -> None:
        if step == 4:
            raise RuntimeError("node lost")

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="node lost"):
        train(recipe, data=None, out=run, datasets=bundle(shared_data), on_step=crash_at_4)
    assert (run / "checkpoints" / "last").read_text().strip() == "step_0000003"
    train(recipe, data=None, out=run, datasets=bundle(shared_data), resume=True)
    want = load_file(str(ref / "checkpoints" / "step_0000006" / "weights.safetensors"))
    got = load_file(str(run / "checkpoints" / "step_0000006" / "weights.safetensors"))
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
