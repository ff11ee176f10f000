"""`ldct report`: one self-contained HTML file from a real (tiny) training run and its evaluation,
checked in a real browser (Debian's chromium, headless)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldct.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(shared_data, tmp_path_factory) -> Path:
    """`ldct train` (4 steps of a tiny DnCNN, 3 patients x 3 real slices) + evaluation at two doses."""
    from ldct.evaluation import evaluate_run

    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    for name, folder in (("abd", "abdomen_dicom"), ("chest", "chest_dicom"), ("head", "head_dicom_tilted")):
        (data / name).mkdir(parents=True)
        for f in sorted((shared_data / folder).iterdir())[10:13]:
            shutil.copy2(f, data / name / f.name)
    run = root / "run"
    assert main(["train", "dncnn", "--data", str(data), "--out", str(run), "--max-steps", "4",
                 "--set", "args.net.depth=3", "--set", "args.net.width=8", "--set", "train.batch_size=2",
                 "--set", "train.val_every=2", "--set", "train.ckpt_every=2", "--set", "train.sample_every=2",
                 "--set", "data.sim.mode=gaussian"]) == 0
    evaluate_run(run, data, doses=[0.25, 0.5], baselines=("low-dose", "gaussian"), max_slices=2, split="all")
    return run


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    return out


def _payload(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', html, re.DOTALL)
    assert m
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_report_is_one_self_contained_file(report, run_dir):
    html = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\((["']?)(https?:|//)|@import""", html)
    assert "<table class=\"metrics\"" in html and "per-dose metrics" in html
    for method in ("low-dose", "gaussian", "supervised/dncnn"):
        assert f"<td>{method}</td>" in html
    for dose in ("0.25", "0.5"):
        assert f"<td>{dose}</td>" in html
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(pngs) >= 3  # loss curve, validation curves, metrics plot
    for b64 in pngs:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    # the viewer's slices are the evaluation's slices, bit for bit (int16 HU, zlib, base64)
    payload = _payload(html)
    assert [c["name"] for c in payload["cases"]] == ["dose 0.25", "dose 0.5"]
    with np.load(run_dir / "eval_all" / "samples.npz") as z:
        for i, case in enumerate(payload["cases"]):
            assert case["order"] == ["low_dose", "output", "normal_dose"]
            assert case["difference"] == ["output", "normal_dose"]
            assert case["residual"] == ["low_dose", "output"]
            for key, panel in (("ld", "low_dose"), ("out", "output"), ("nd", "normal_dose")):
                ref = z[f"d{i}_{key}"]
                assert case["slices"] == len(ref) and len(case["panels"][panel]) == len(ref)
                got = np.frombuffer(zlib.decompress(base64.b64decode(case["panels"][panel][-1])), "<i2")
                np.testing.assert_array_equal(got.reshape(ref.shape[1:]), ref[-1])
    assert set(payload["windows"]) == {"soft", "lung", "bone", "brain"}


def test_report_of_the_evaluation_folder_includes_the_run(run_dir, tmp_path):
    out = tmp_path / "eval.html"
    assert main(["report", str(run_dir / "eval_all"), "-o", str(out)]) == 0
    html = out.read_text()
    assert "training loss" in html and "per-dose metrics" in html and "validation metrics" in html


def test_report_of_slices_of_different_sizes(run_dir, shared_data, tmp_path):
    """`ldct evaluate --split all` over patients scanned on different grids: a 512x512 chest slice and a
    101x122 abdomen slice share one dose; they are kept (the smaller centred on air) and the report renders."""
    from ldct.io import read_volume
    from ldct.report.samples import PAD_HU, read_samples, write_samples

    big = read_volume(shared_data / "chest_dicom").data[10]
    small = read_volume(shared_data / "volumes" / "abdomen_3mm.nii.gz").data[50]
    assert big.shape == (512, 512) and small.shape == (101, 122)
    ev = tmp_path / "eval"
    shutil.copytree(run_dir / "eval_all", ev)
    items = [{"ld": im + 30.0, "out": im + 3.0, "nd": im, "patient_id": pid, "slice_index": z}
             for im, pid, z in ((big, "chest", 10), (small, "abd", 50))]
    write_samples({0.25: items}, ev / "samples.npz", model="dncnn")
    (case,) = read_samples(ev / "samples.npz")
    assert case.panels["normal_dose"].shape == (2, 512, 512) and case.slice_labels == ["chest slice 10", "abd slice 50"]
    top, left = (512 - 101) // 2, (512 - 122) // 2
    got = case.panels["output"][1]
    np.testing.assert_array_equal(got[top:top + 101, left:left + 122], np.rint(small + 3.0))
    assert (got[:top] == PAD_HU).all() and (got[:, :left] == PAD_HU).all()
    np.testing.assert_array_equal(case.panels["low_dose"][0], np.rint(big + 30.0))
    out = tmp_path / "r.html"
    assert main(["report", str(ev), "-o", str(out)]) == 0
    (c,) = _payload(out.read_text())["cases"]
    assert (c["slices"], c["height"], c["width"]) == (2, 512, 512)
    shown = np.frombuffer(zlib.decompress(base64.b64decode(c["panels"]["normal_dose"][1])), "<i2").reshape(512, 512)
    np.testing.assert_array_equal(shown[top:top + 101, left:left + 122], np.rint(small))


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=8000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _state(dom: str) -> tuple[str, list[int]]:
    rendered = re.search(r'<body[^>]*data-rendered="([^"]+)"', dom)
    sums = [int(s) for s in re.findall(r'<canvas data-panel="[a-z_]+"[^>]*data-sum="(\d+)"', dom)]
    assert rendered, dom[:2000]
    return rendered.group(1), sums


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test.sh installs it)")
def test_report_in_a_real_browser(report, tmp_path):
    url = report.resolve().as_uri()
    first = _chromium(url + "#slice=0", tmp_path, "--dump-dom")
    moved = _chromium(url + "#slice=1&window=bone", tmp_path, "--dump-dom")
    s0, s1 = _state(first.stdout), _state(moved.stdout)
    assert (s0[0], s1[0]) == ("0:0:soft", "0:1:bone")
    # low dose, output, normal dose, difference (output - normal dose), residual (low dose - output) drawn
    assert len(s0[1]) == 5 and all(v > 0 for v in s0[1])
    assert s0[1][3] != s1[1][3] and s0[1][4] != s1[1][4]  # the slider changed both (their window is fixed)
    assert s0[1][3] != s0[1][4]
    assert all(a != b for a, b in zip(s0[1][:3], s1[1][:3]))
    assert '<table class="metrics">' in first.stdout and "supervised/dncnn" in first.stdout
    assert "noise power spectra" in first.stdout  # the NPS curves of the evaluation

    shots = []
    for k in (0, 1):
        png = tmp_path / f"shot{k}.png"
        _chromium(url + f"#slice={k}", tmp_path, f"--screenshot={png}", "--window-size=1280,1400",
                  "--hide-scrollbars")
        shots.append(np.asarray(Image.open(png).convert("L"), dtype=np.int16))
    assert shots[0].std() > 20  # not blank
    assert np.abs(shots[0] - shots[1]).mean() > 0.2  # the images on screen changed with the slice


def test_report_bad_inputs(run_dir, tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "-o", str(tmp_path / "r.html")]) == 2
    assert main(["report", str(run_dir), "-o", str(tmp_path / "r.pdf")]) == 2
    (tmp_path / "r.html").write_text("keep")
    assert main(["report", str(run_dir), "-o", str(tmp_path / "r.html")]) == 2
    assert (tmp_path / "r.html").read_text() == "keep"
    err = capsys.readouterr().err
    assert err.count("ldct: error:") == 4 and "Traceback" not in err


def test_best_values_are_compared_on_the_same_slices_and_columns_share_a_format():
    """Bold marks the best value per dose among rows scored on the same slice count (BM3D on 2 slices is
    not compared with models on 6), and every float of a column has the same number format."""
    from ldct.report.data import MetricTable
    from ldct.report.html import _best_cells, render_table

    t = MetricTable(title="t", columns=["dose", "method", "n", "PSNR"], better={"PSNR": 1}, group_by="dose",
                    rows=[["0.25", "low-dose", 6, 30.0], ["0.25", "bm3d", 2, 35.0], ["0.25", "model", 6, 33.0],
                          ["0.25", "gaussian", 6, 0.5]])
    best = _best_cells(t)
    assert (2, 3) in best and (1, 3) not in best
    html_text = render_table(t)
    assert "0.50" in html_text and "0.5000" not in html_text  # the column's format, not the cell's
