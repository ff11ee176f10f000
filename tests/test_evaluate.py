"""Evaluation: rows equal the metrics library on the same arrays; CSV, JSON, figures and table written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from test_data_datasets import make_pairs
from torch import nn

from ldct import Denoiser
from ldct.baselines import gaussian_filter_hu
from ldct.data import build_datasets
from ldct.evaluation import evaluate, summarize, summary_table, write_results
from ldct.metrics import compute_metrics


class Identity(nn.Module):
    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        return x


class DoseSpy(nn.Module):
    """Blurs by a 3x3 box filter and records the doses it is given."""

    def __init__(self):
        super().__init__()
        self.doses: list[float] = []
        self.conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
        nn.init.constant_(self.conv.weight, 1 / 9)

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        self.doses.extend(dose.tolist())
        return self.conv(x)


@pytest.fixture(scope="module")
def bundle(shared_data, tmp_path_factory):
    root = make_pairs(shared_data, tmp_path_factory.mktemp("pairs"))
    run = tmp_path_factory.mktemp("run")
    return build_datasets({"root": str(root), "patch_size": 32, "split": {"test": ["P3"], "val": ["P2"]}},
                          run_dir=run)


def test_low_dose_row_equals_compute_metrics(bundle, tmp_path):
    res = evaluate(Denoiser(Identity()), bundle.test, name="identity", bm3d_max_slices=1)
    n = len(bundle.test)
    assert n == 3
    by = {(r["method"], r["slice_index"]): r for r in res.rows}
    for i in range(n):
        ld, nd, meta = bundle.test.get_hu(i)
        ref = compute_metrics(ld[0], nd[0])
        row = by[("low-dose", meta["slice_index"])]
        for k, v in ref.items():
            assert row[k] == pytest.approx(v, rel=1e-9), k
        # the identity network returns its input: same numbers as the low-dose row
        ident = by[("identity", meta["slice_index"])]
        assert ident["psnr_soft_tissue"] == pytest.approx(row["psnr_soft_tissue"], abs=1e-4)
        g = compute_metrics(gaussian_filter_hu(ld[0], 1.0), nd[0])
        assert by[("gaussian", meta["slice_index"])]["rmse_full"] == pytest.approx(g["rmse_full"], rel=1e-9)
        # noise: white noise of 40 HU was added; the residual std in the soft-tissue ROI reads ~40 HU
        assert 30 < row["residual_std_hu"] < 50
    summary = res.row("low-dose")
    assert summary["n"] == 3
    assert summary["psnr_soft_tissue"] == pytest.approx(
        np.mean([by[("low-dose", bundle.test.get_hu(i)[2]["slice_index"])]["psnr_soft_tissue"] for i in range(n)]))
    assert res.row("identity")["psnr_gain_soft_tissue"] == pytest.approx(0.0, abs=1e-4)
    assert res.row("bm3d")["n"] == 1  # BM3D limited to one slice here
    # smoothing 40 HU white noise helps in the soft-tissue window, and lowers the measured noise
    assert res.row("gaussian")["psnr_soft_tissue"] > summary["psnr_soft_tissue"]
    assert res.row("gaussian")["noise_std_hu"] < 0.7 * summary["noise_std_hu"]
    assert res.row("bm3d")["noise_std_hu"] < summary["noise_std_hu"] / 2
    # texture and structure: the Gaussian filter coarsens the noise grain and removes anatomy along edges;
    # the identity removes nothing (its residual is zero: no structure score), the input has none
    assert res.row("gaussian")["nps_mean_f"] < 0.8 * summary["nps_mean_f"]
    assert summary["nps_mean_f_nd"] > 0
    assert res.row("gaussian")["structure_score"] > 0.2
    assert np.isnan(summary["structure_score"])
    assert abs(summary["hu_shift_soft"]) < 3  # zero-mean noise does not move CT numbers
    # radial NPS per (dose, method) for the report: the Gaussian's sits below the input's at high frequencies
    curves = {c["method"]: c for c in res.meta["nps_curves"]}
    assert {"normal dose", "low-dose", "gaussian", "identity"} <= set(curves)
    hi = [k for k, f in enumerate(curves["gaussian"]["freq"]) if f > 0.5 * max(curves["gaussian"]["freq"])]
    assert all(curves["gaussian"]["nps"][k] < 0.5 * curves["low-dose"]["nps"][k] for k in hi)

    paths = write_results(res, tmp_path / "eval")
    with open(paths["per_slice"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 3 + 1  # low-dose, gaussian, identity per slice + one BM3D slice
    assert {"psnr_soft_tissue", "ssim_head", "rmse_chest", "mse_abdomen", "noise_std_hu"} <= set(rows[0])
    low = [r for r in rows if r["method"] == "low-dose"]
    assert float(low[0]["psnr_full"]) == pytest.approx(by[("low-dose", int(low[0]["slice_index"]))]["psnr_full"],
                                                       rel=1e-5)
    js = json.loads(paths["summary_json"].read_text())
    assert js["windows"]["soft_tissue"] == "soft_tissue [-160, 240] HU"
    assert {r["method"] for r in js["summary"]} == {"low-dose", "gaussian", "bm3d", "identity"}
    assert (tmp_path / "eval" / "metrics_dose0.25.png").stat().st_size > 5000
    assert (tmp_path / "eval" / "samples_dose0.25.png").stat().st_size > 5000
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(summary_table(res))
    text = console.export_text()
    assert "low-dose" in text and f"{summary['psnr_soft_tissue']:.2f}" in text


def test_dose_is_passed_to_dose_conditioned_models(bundle):
    spy = DoseSpy()
    res = evaluate(Denoiser(spy, dose_conditioned=True), bundle.test, name="blur", baselines=["low-dose"])
    assert spy.doses and set(spy.doses) == {0.25}
    assert res.row("blur")["psnr_soft_tissue"] > res.row("low-dose")["psnr_soft_tissue"]
    plain = DoseSpy()
    with pytest.raises(AttributeError):  # not dose-conditioned: no dose is passed
        evaluate(Denoiser(plain), bundle.test, baselines=False)


def test_evaluate_command_on_a_trained_run(shared_data, tmp_path, capsys):
    from ldct.cli import main

    pairs = make_pairs(shared_data, tmp_path / "pairs")
    run = tmp_path / "run"
    rc = main(["train", "unet", "--data", str(pairs), "--out", str(run), "--max-steps", "3",
               "--set", "args.net.width=8", "--set", "args.net.depth=2", "--set", "data.patch_size=32",
               "--set", "train.batch_size=2", "--set", "train.val_every=0", "--set", "train.sample_every=0",
               "--set", "data.split={test: [P3], val: [P2]}"])
    assert rc == 0
    capsys.readouterr()
    rc = main(["evaluate", str(run), "--data", str(pairs), "--bm3d-slices", "1"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    ev = run / "eval_test"
    js = json.loads((ev / "summary.json").read_text())
    assert js["patients"] == ["P3"] and js["split"] == "test" and js["patients_in_training_set"] == []
    assert {r["method"] for r in js["summary"]} == {"low-dose", "gaussian", "bm3d", "supervised/unet"}
    assert "low-dose" in out.out and "supervised/unet" in out.out and "PSNR soft dB" in out.out
    # the low-dose row is compute_metrics on the quarter-dose vs full-dose slices of the held-out patient
    full = np.load(pairs / "P3" / "full_dose" / "ct.npy")
    quarter = np.load(pairs / "P3" / "quarter_dose" / "ct.npy")
    expect = np.mean([compute_metrics(quarter[k], full[k])["psnr_soft_tissue"] for k in range(len(full))])
    low = next(r for r in js["summary"] if r["method"] == "low-dose")
    assert low["psnr_soft_tissue"] == pytest.approx(expect, rel=1e-9) and low["n"] == 3
    with open(ev / "per_slice.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3 * 3 + 1
    # bad inputs: one line, exit code 2
    assert main(["evaluate", str(tmp_path / "nope"), "--data", str(pairs)]) == 2
    assert main(["evaluate", str(run), "--data", str(pairs / "P1")]) == 2  # P1 is a training patient
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ldct: error: ") and "--split all" in err[-1]
    assert main(["evaluate", str(run), "--data", str(pairs / "P1"), "--split", "all", "--no-baselines",
                 "--out", str(tmp_path / "ev_p1")]) == 0
    js = json.loads((tmp_path / "ev_p1" / "summary.json").read_text())
    assert js["patients_in_training_set"] == ["P1"] and js["warnings"]


def test_psnr_gain_pairs_rows_of_the_same_slice_only():
    """Two scans of one patient in one folder (Mayo L067 sharp + smooth raw slices) share patient, slice
    index and source folder: the gain must compare each slice with its own low-dose row (kernel differs)."""
    ident = {"dose": 0.25, "patient_id": "L067", "slice_index": 0, "z_mm": 0.0, "source": "/d/mayo"}
    rows = [{"method": "low-dose", **ident, "kernel": "sharp", "psnr_soft_tissue": 18.0},
            {"method": "low-dose", **ident, "kernel": "smooth", "psnr_soft_tissue": 26.0},
            {"method": "m", **ident, "kernel": "sharp", "psnr_soft_tissue": 20.0},
            {"method": "m", **ident, "kernel": "smooth", "psnr_soft_tissue": 27.0}]
    s = {r["method"]: r for r in summarize(rows, ["psnr_soft_tissue"])}
    assert s["m"]["psnr_gain_soft_tissue"] == pytest.approx(1.5)  # (2 + 1) / 2, not (-6 + 1) / 2
    assert s["m"]["psnr_gain_soft_tissue"] == pytest.approx(s["m"]["psnr_soft_tissue"] - s["low-dose"]["psnr_soft_tissue"])
