"""Real low dose as the judge: ``ldct evaluate`` scores a model on real quarter/full-dose pairs (AAPM-Mayo),
per patient, on the real low dose (not a simulated one), and accepts a bundled model by name."""

from __future__ import annotations

import csv

from helpers_pairs import copy_real_pairs

from ldct.cli import main
from ldct.evaluation.run import evaluate_run


def test_bundled_model_on_real_pairs_per_patient(shared_data, tmp_path):
    data = copy_real_pairs(shared_data, tmp_path / "pairs")
    results, out = evaluate_run("default", data, out=tmp_path / "eval", split="all", baselines=("low-dose",),
                                figures=False)
    rows = list(csv.DictReader((out / "per_slice.csv").open()))
    assert {r["patient_id"] for r in rows} == {"L096", "L143", "L286"}  # "Anonymous" in every header
    assert {r["dose"] for r in rows} == {"0.25"}
    by = {(r["patient_id"], r["method"]): float(r["psnr_soft_tissue"]) for r in rows}
    for pid in ("L096", "L143", "L286"):
        gain = by[(pid, "supervised/nafnet")] - by[(pid, "low-dose")]
        assert gain > 3.0, (pid, gain)  # on the real quarter dose: ~+4 dB (bench/real_pairs.py)
    assert results.meta["data_kind"] == "paired_dirs"


def test_evaluate_by_bundled_name_writes_outside_the_package(shared_data, tmp_path, monkeypatch):
    data = copy_real_pairs(shared_data, tmp_path / "pairs")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "default", "--data", str(data), "--split", "all", "--no-baselines",
                 "--max-slices", "1"]) == 0
    assert (tmp_path / "eval_default_all" / "summary.csv").is_file()


def test_simulated_outputs_of_anonymous_patients_stay_apart(shared_data, tmp_path):
    """Every Mayo header says PatientID "Anonymous": ldct simulate of two patients must give two patients."""
    from ldct.data.build import build_datasets

    data = copy_real_pairs(shared_data, tmp_path / "pairs")
    out = tmp_path / "sim"
    assert main(["simulate", str(data / "L096" / "full_3mm_sharp"), str(data / "L286" / "full_3mm_sharp"),
                 "--dose", "0.25", "-o", str(out)]) == 0
    bundle = build_datasets({"root": str(out), "patch_size": 32, "split": {"val": 0, "test": 1, "seed": 0}},
                            run_dir=None, progress=False)
    ids = set(bundle.summary["patients"])
    assert len(ids) == 2 and not any("anonymous" in i.lower() for i in ids), ids
