"""End to end: ``ldct train <gan recipe> --max-steps 3`` (tiny networks via --set) on real CT, then
``ldct evaluate`` and ``ldct denoise`` on the checkpoint; exact resume of CycleGAN (pools, schedulers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_gan import one_thread  # noqa: F401  (fixture)
from safetensors.torch import load_file

from ldct.cli import main
from ldct.io import read_volume

NOISE_HU = 40.0
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(shared_data: Path, tmp_path_factory) -> Path:
    """Three real patients as full-dose / quarter-dose .npy volumes (quarter = full + 40 HU white
    noise), sizes multiples of 4 (for x4 super-resolution); plus unpaired ld/ and nd/ folders."""
    root = tmp_path_factory.mktemp("gan_data")
    rng = np.random.default_rng(0)
    vols = {
        "P1": read_volume(shared_data / "volumes" / "abdomen_3mm.nii.gz").data[50:53, :100, :120],
        "P2": read_volume(shared_data / "volumes" / "chest_1p5mm.nii.gz").data[40:42, :164, 20:200],
        "P3": read_volume(shared_data / "chest_dicom").data[10:12, 100:420:2, 100:420:2],
    }
    for pid, nd in vols.items():
        ld = nd + rng.normal(0, NOISE_HU, nd.shape)
        for role, arr in (("full_dose", nd), ("quarter_dose", ld)):
            (root / "pairs" / pid / role).mkdir(parents=True)
            np.save(root / "pairs" / pid / role / "ct.npy", arr.astype(np.float32))
        if pid != "P3":  # unpaired: low dose of P1, normal dose of P2
            role, arr = ("ld", ld) if pid == "P1" else ("nd", nd)
            (root / "unpaired" / role / pid).mkdir(parents=True)
            np.save(root / "unpaired" / role / pid / "ct.npy", arr.astype(np.float32))
    (root / "test_p3").mkdir()
    np.save(root / "test_p3" / "ld.npy", np.load(root / "pairs" / "P3" / "quarter_dose" / "ct.npy"))
    return root


COMMON = [
    "--max-steps",
    "3",
    "--set",
    "data.patch_size=32",
    "--set",
    "train.batch_size=2",
    "--set",
    "data.samples_per_epoch=16",
    "--set",
    "train.log_every=1",
    "--set",
    "train.sample_every=0",
]
PAIRED = [
    "--set",
    "data.kind=paired_dirs",
    "--set",
    "data.split={val: [P2], test: [P3]}",
    "--set",
    "train.val_every=3",
]
TINY = {
    "wgan_gp": [
        "--set",
        "args.generator={name: wgan_generator, channels: 8, depth: 3, residual: true}",
        "--set",
        "args.critic={name: wgan_critic, channels: 8, hidden: 32}",
        "--set",
        "args.n_critic=2",
    ],
    "srgan_x4": [
        "--set",
        "args.generator={name: srresnet, channels: 8, num_blocks: 2, residual: true}",
        "--set",
        "args.discriminator={name: srgan_discriminator, channels: 8, hidden: 32}",
        "--set",
        "args.pretrain_steps=1",
        "--set",
        "data.downsample=4",
    ],
    "pix2pix": [
        "--set",
        "args.generator={name: unet, width: 8, depth: 2}",
        "--set",
        "args.discriminator={name: patchgan, channels: 8}",
    ],
    "cyclegan": [
        "--set",
        "args.generator={name: resnet, width: 8, num_blocks: 2}",
        "--set",
        "args.discriminator={name: patchgan, channels: 8, norm: instance}",
        "--set",
        "args.pool_size=4",
    ],
}
NETS = {
    "wgan_gp": {"G", "D"},
    "srgan_x4": {"G", "D"},
    "pix2pix": {"G", "D"},
    "cyclegan": {"G", "F", "D_ND", "D_LD"},
}


def train_args(recipe: str, data: Path, out: Path) -> list[str]:
    if recipe == "cyclegan":
        where = ["--data", str(data / "unpaired")]  # holds ld/ and nd/ (the unpaired convention)
    else:
        where = ["--data", str(data / "pairs"), *PAIRED]
    return ["train", recipe, "--out", str(out), *where, *COMMON, *TINY[recipe]]


def history(run: Path) -> list[dict[str, str]]:
    import csv

    (path,) = run.glob("logs/**/metrics.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("recipe", ["wgan_gp", "srgan_x4", "pix2pix", "cyclegan"])
def test_train_evaluate_denoise(recipe, data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(recipe, data, run)) == 0
    ckpt = run / "checkpoints" / "step_0000003"
    weights = load_file(str(ckpt / "weights.safetensors"))
    assert {k.split(".", 1)[0] for k in weights} == NETS[recipe]
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["inference_net"] == "G" and meta["scale"] == (4 if recipe == "srgan_x4" else 1)
    rows = [r for r in history(run) if r.get("loss_d")]
    assert len(rows) >= 2 and all(np.isfinite(float(r["loss_g"])) for r in rows)
    assert all(r["d_real"] and r["d_fake"] for r in rows)  # D(real) / D(fake) logged
    if recipe == "wgan_gp":
        assert all(r["wasserstein"] for r in rows)

    # evaluate on paired data: the run's test patient (CycleGAN, trained unpaired, has no split: all)
    ev = tmp_path / "eval"
    split = ["--split", "all"] if recipe == "cyclegan" else []
    code = main(
        [
            "evaluate",
            str(run),
            "--data",
            str(data / "pairs"),
            "--out",
            str(ev),
            "--no-baselines",
            *split,
            "--max-slices",
            "1",
        ]
    )
    assert code == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert "PSNR" in json.dumps(summary) or "psnr" in json.dumps(summary)

    # denoise a low-dose volume (x4 input downsampled for SR)
    inp = data / "test_p3" / "ld.npy"
    if recipe == "srgan_x4":
        small = tmp_path / "ld_small.npy"
        np.save(small, np.load(inp)[:, ::4, ::4].copy())
        inp = small
    out = tmp_path / "out.npy"
    assert main(["denoise", str(inp), "-o", str(out), "--model", str(run), "--device", "cpu"]) == 0
    result = np.load(out)
    assert result.shape == (2, 160, 160) and np.isfinite(result).all()


def test_cyclegan_resume_is_exact(data, tmp_path):
    """Interrupted after step 2 and resumed = trained straight to step 4: same weights (the image pools,
    the LR schedulers and the optimizers are part of the checkpoint)."""
    import torch

    from ldct.engine.config import load_recipe
    from ldct.engine.loop import train

    args = train_args("cyclegan", data, tmp_path / "unused")
    overrides = [a for i, a in enumerate(args) if i > 0 and args[i - 1] == "--set"]
    recipe = load_recipe("cyclegan", [*overrides, "train.ckpt_every=2", "args.decay_start=0.25"])
    straight = train(recipe, data=data / "unpaired", out=tmp_path / "a", max_steps=4)

    class Stop(Exception):
        pass

    def stop_after_2(step: int) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train(recipe, data=data / "unpaired", out=tmp_path / "b", max_steps=4, on_step=stop_after_2)
    state = torch.load(tmp_path / "b" / "checkpoints" / "step_0000002" / "train_state.pt", weights_only=True)
    assert state["extra"]["pool.nd.images"].shape[0] == 4  # the pool was saved
    resumed = train(recipe, data=data / "unpaired", out=tmp_path / "b", max_steps=4, resume=True)
    a = load_file(str(straight / "checkpoints" / "step_0000004" / "weights.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step_0000004" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
