"""Hostile inputs beyond file formats (issue 13, section 2): recipes, model files, checkpoint pointers,
simulation manifests, report inputs and read-only output locations.

Each case of the corpus is driven through the command line (``ldct.cli.main``, or a subprocess with a
timeout and a memory limit where the old behaviour was a hang or a memory bomb) and must end with exit
code 2, exactly one ``ldct: error:`` line on stderr that names the offending file, no traceback, no
output left behind, and every input byte-for-byte unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_denoise import mayo_slice
from PIL import Image

from ldct.cli import main

SLICES = ("L067_FD_3mm_smooth_0040.raw", "L067_FD_3mm_smooth_0070.raw")
TINY_NET = {"name": "dncnn", "depth": 3, "width": 4, "batch_norm": False}
RECIPE = {
    "method": "supervised",
    "args": {"net": dict(TINY_NET), "lr": 1.0e-3, "scheduler": None},
    "data": {"patch_size": 32, "split": {"val": 0, "test": 0}, "precompute": False, "cache": False},
    "train": {"max_steps": 1, "batch_size": 2, "val_every": 0, "ckpt_every": 0, "sample_every": 0},
}
#: "billion laughs": nine levels of ten aliases each (10**9 strings once expanded), as a YAML list
ALIAS_BOMB = "".join(
    ['  - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"  - &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)]
)


# ------------------------------------------------------------------------------------------------
# the world every case starts from (built once with the project's own writers, never modified)
def save_model(out: Path, *, net: dict | None = None, photos: bool = False,
               fill: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Path:
    """An exported model folder (weights.safetensors + meta.json) written by ldct's own functions."""
    from ldct.engine.checkpoint import make_meta
    from ldct.methods.supervised import Supervised
    from ldct.models.files import MODEL_KIND, save_weights

    torch.manual_seed(0)
    args = {"net": dict(net or TINY_NET), "loss": "l1", "lr": 1e-3, "scheduler": None}
    method = Supervised(**args)
    data = {"hu_window": [-1000.0, 1000.0], "doses": [0.25]}
    if photos:
        data = {"kind": "photos", "sim": {"mode": "gaussian", "sigma": 10.0}}
    meta = make_meta(method, {"method": "supervised", "args": args, "data": data}, step=1, kind=MODEL_KIND)
    weights = {k: v for k, v in method.weights().items() if k.startswith("net.")}
    if fill is not None:
        weights = {k: fill(v) for k, v in weights.items()}
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "weights.safetensors", weights, meta)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


def _eval_folder(out: Path) -> Path:
    """An evaluation folder written by ldct.evaluation's own writers (summary.json, per_slice.csv, samples.npz)."""
    from ldct.evaluation.core import EvalResults
    from ldct.evaluation.report import write_tables
    from ldct.report.samples import write_samples

    rng = np.random.default_rng(0)
    rows = [{"method": m, "dose": 0.25, "patient_id": "L067", "slice_index": k, "psnr_soft_tissue": 30.0 + k + j,
             "ssim_soft_tissue": 0.8, "noise_std_hu": 20.0 - 5 * j}
            for j, m in enumerate(("low-dose", "supervised/dncnn")) for k in range(2)]
    summary = [{"dose": 0.25, "method": m, "n": 2, "psnr_soft_tissue": 30.5 + j, "ssim_soft_tissue": 0.8,
                "noise_std_hu": 20.0 - 5 * j} for j, m in enumerate(("low-dose", "supervised/dncnn"))]
    res = EvalResults(rows=rows, summary=summary, metric_columns=["psnr_soft_tissue", "ssim_soft_tissue"],
                      meta={"model": "supervised/dncnn", "doses": [0.25], "patients": ["L067"]})
    write_tables(res, out)
    nd = rng.normal(40.0, 10.0, (2, 24, 24)).astype(np.float32)
    items = [{"ld": nd[k] + 30, "out": nd[k] + 3, "nd": nd[k], "patient_id": "L067", "slice_index": k}
             for k in range(2)]
    write_samples({0.25: items}, out / "samples.npz", model="dncnn")
    return out


@dataclass
class World:
    root: Path
    npy: Path
    png: Path
    model: Path
    sim: Path
    recipe: Path
    eval: Path
    run: Path


@pytest.fixture(scope="module")
def world(shared_data, tmp_path_factory) -> World:
    import yaml

    from ldct.engine.config import dump_recipe, load_recipe

    root = tmp_path_factory.mktemp("hostile_world")
    crops = np.stack([mayo_slice(shared_data, n)[200:264, 200:264] for n in SLICES])
    np.save(root / "vol.npy", crops)
    np.save(root / "x.npy", crops[:, :32, :32].copy())
    Image.fromarray(np.clip((crops[0, :48, :48] + 200) / 2, 0, 255).astype(np.uint8), mode="L").save(root / "p.png")
    save_model(root / "ok")
    assert main(["simulate", str(root / "vol.npy"), "--dose", "0.25", "--mode", "gaussian", "--spacing", "3,0.7,0.7",
                 "--seed", "0", "-o", str(root / "sim")]) == 0
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    _eval_folder(root / "eval")
    run = root / "run"
    shutil.copytree(root / "ok", run / "checkpoints" / "step_0000001")
    for ptr in ("last", "best"):
        (run / "checkpoints" / ptr).write_text("step_0000001\n")
    (run / "config.yaml").write_text(dump_recipe(load_recipe(root / "recipe.yaml")))
    (run / "logs" / "csv").mkdir(parents=True)
    (run / "logs" / "csv" / "metrics.csv").write_text("step,train/loss\n1,0.5\n2,0.4\n3,0.35\n")
    return World(root, root / "x.npy", root / "p.png", root / "ok", root / "sim", root / "recipe.yaml",
                 root / "eval", run)


# ------------------------------------------------------------------------------------------------
# the corpus
@dataclass
class Case:
    argv: list[str]
    named: Path  # the file the error line must name
    output: Path | None = None  # must not exist afterwards (nor any temporary sibling)
    subprocess: bool = False  # old behaviour: a hang or a memory bomb


@dataclass
class Ctx:
    w: World
    tmp: Path
    ro: Callable[[], Path] = field(repr=False)

    @property
    def inp(self) -> Path:
        d = self.tmp / "in"
        d.mkdir(exist_ok=True)
        return d

    @property
    def out(self) -> Path:
        d = self.tmp / "out"
        d.mkdir(exist_ok=True)
        return d


def _meta_edit(c: Ctx, edit: Callable[[dict], None]) -> Path:
    m = c.inp / "m"
    shutil.copytree(c.w.model, m)
    meta = json.loads((m / "meta.json").read_text())
    edit(meta)
    (m / "meta.json").write_text(json.dumps(meta))
    return m


def _net_edit(**kw) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        meta["network"] = meta["networks"]["net"] = {**meta["network"], **kw}
    return edit


def _denoise(c: Ctx, model: Path, named: Path | None = None, inp: Path | None = None, out: str = "y.npy") -> Case:
    o = c.out / out
    return Case(["denoise", str(inp or c.w.npy), "-o", str(o), "-m", str(model), "--device", "cpu"],
                named or model, o)


def _header_meta(c: Ctx, text: str) -> Path:
    """A lone weights file (no meta.json) whose safetensors header carries ``ldct_meta`` = text."""
    from safetensors.torch import load_file, save_file

    m = c.inp / "m"
    m.mkdir()
    save_file(load_file(str(c.w.model / "weights.safetensors")), str(m / "weights.safetensors"),
              metadata={"format": "pt", "ldct_meta": text})
    return m / "weights.safetensors"


def _raw_safetensors(c: Ctx, header: dict, data: bytes = b"\0" * 16) -> Path:
    m = c.inp / "m"
    m.mkdir()
    h = json.dumps(header).encode()
    (m / "weights.safetensors").write_bytes(len(h).to_bytes(8, "little") + h + data)
    shutil.copy(c.w.model / "meta.json", m / "meta.json")
    return m


def _pointer_run(c: Ctx, text: bytes) -> Case:
    """A run folder whose ``last`` pointer holds ``text``; a valid model lies outside it."""
    run = c.inp / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(c.w.model, c.inp / "outside")
    (run / "checkpoints" / "last").write_bytes(text)
    return _denoise(c, run, named=run / "checkpoints" / "last")


def _recipe(c: Ctx, text: str | None = None, edit: Callable[[dict], None] | None = None, **kw) -> Case:
    import yaml

    r = c.inp / "r.yaml"
    if text is None:
        d = copy.deepcopy(RECIPE)
        edit(d)
        text = yaml.safe_dump(d, sort_keys=False)
    r.write_text(text)
    o = c.out / "run"
    return Case(["train", str(r), "--data", str(c.w.sim), "-o", str(o)], r, o, **kw)


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return edit


def _manifest(c: Ctx, edit: Callable[[dict], None] | None = None, raw: bytes | None = None) -> Case:
    sim = c.inp / "sim"
    shutil.copytree(c.w.sim, sim)
    outside = c.inp / "elsewhere"
    outside.mkdir()
    shutil.copy(sim / "ld_0.25.npy", outside / "ld.npy")
    if raw is not None:
        (sim / "manifest.json").write_bytes(raw)
    else:
        m = json.loads((sim / "manifest.json").read_text())
        edit(m)
        (sim / "manifest.json").write_text(json.dumps(m))
    o = c.out / "run"
    return Case(["train", str(c.w.recipe), "--data", str(sim), "-o", str(o)], sim / "manifest.json", o)


def _record(key: str, value) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        m["records"][0][key] = value(m) if callable(value) else value
    return edit


def _report_eval(c: Ctx, name: str, data: bytes | None = None, edit: Callable[[bytes], bytes] | None = None) -> Case:
    ev = c.inp / "eval"
    shutil.copytree(c.w.eval, ev)
    f = ev / name
    f.write_bytes(edit(f.read_bytes()) if edit is not None else data)
    o = c.out / "r.html"
    return Case(["report", str(ev), "-o", str(o)], f, o)


def _report_run(c: Ctx, name: str, data: bytes, **kw) -> Case:
    run = c.inp / "run"
    shutil.copytree(c.w.run, run)
    f = run / name
    f.write_bytes(data)
    o = c.out / "r.html"
    return Case(["report", str(run), "-o", str(o)], f, o, **kw)


def _summary(edit: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def go(b: bytes) -> bytes:
        d = json.loads(b)
        edit(d)
        return json.dumps(d).encode()
    return go


def _csv_drop_column(col: str) -> Callable[[bytes], bytes]:
    def go(b: bytes) -> bytes:
        lines = b.decode().splitlines()
        k = lines[0].split(",").index(col)
        return ("\n".join(",".join(x for j, x in enumerate(line.split(",")) if j != k) for line in lines)
                + "\n").encode()
    return go


def _samples(**arrays) -> Callable[[bytes], bytes]:
    def go(b: bytes) -> bytes:
        import io

        with np.load(io.BytesIO(b)) as z:
            d = {k: z[k] for k in z.files}
        d.update(arrays)
        buf = io.BytesIO()
        np.savez_compressed(buf, **d)
        return buf.getvalue()
    return go


def _meta_not_json(c: Ctx) -> Case:
    m = c.inp / "m"
    shutil.copytree(c.w.model, m)
    (m / "meta.json").write_bytes(b"\x00{garbage")
    return _denoise(c, m)


def _huge(v: torch.Tensor) -> torch.Tensor:
    return torch.full_like(v, 1e30)


CASES: dict[str, Callable[[Ctx], Case]] = {
    # --- model files: metadata, header, tensors -----------------------------------------------------
    "model-nan-weights": lambda c: _denoise(c, save_model(c.inp / "m", fill=lambda v: torch.full_like(v, math.nan))),
    "model-inf-weights": lambda c: _denoise(c, save_model(c.inp / "m", fill=lambda v: torch.full_like(v, math.inf))),
    "model-output-overflows": lambda c: _denoise(c, save_model(c.inp / "m", fill=_huge)),
    "model-photo-output-overflows": lambda c: _denoise(c, save_model(c.inp / "m", photos=True, fill=_huge),
                                                       inp=c.w.png, out="y.png"),
    "model-huge-width": lambda c: _denoise(c, _meta_edit(c, _net_edit(width=10**7))),
    "model-huge-depth": lambda c: _denoise(c, _meta_edit(c, _net_edit(depth=10**5))),
    "model-negative-width": lambda c: _denoise(c, _meta_edit(c, _net_edit(width=-4))),
    "model-bigger-than-its-file": lambda c: _denoise(c, _meta_edit(c, _net_edit(width=64, depth=17))),
    "model-shape-mismatch": lambda c: _denoise(c, _meta_edit(c, _net_edit(width=8))),
    "model-meta-not-json": lambda c: _meta_not_json(c),
    "model-scale-not-a-number": lambda c: _denoise(c, _meta_edit(c, lambda m: m.update(scale="abc"))),
    "model-channels-not-a-number": lambda c: _denoise(c, _meta_edit(c, lambda m: m.update(channels="three"))),
    "model-network-not-a-mapping": lambda c: _denoise(c, _meta_edit(c, lambda m: m.update(network=42))),
    "model-hu-window-infinite": lambda c: _denoise(c, _meta_edit(c, lambda m: m.update(hu_window=[-math.inf,
                                                                                                 math.inf]))),
    "model-header-meta-not-json": lambda c: _denoise(c, _header_meta(c, "{not json")),
    "model-header-meta-a-list": lambda c: _denoise(c, _header_meta(c, "[1, 2]")),
    "model-header-bad-dtype": lambda c: _denoise(c, _raw_safetensors(
        c, {"net.net.0.weight": {"dtype": "X99", "shape": [2, 2], "data_offsets": [0, 16]}})),
    "model-header-absurd-shape": lambda c: _denoise(c, _raw_safetensors(
        c, {"net.net.0.weight": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}})),
    "model-header-not-an-object": lambda c: _denoise(c, _raw_safetensors(c, [1, 2, 3])),  # type: ignore[arg-type]
    "pointer-escapes-the-run": lambda c: _pointer_run(c, b"../../outside\n"),
    "pointer-absolute": lambda c: _pointer_run(c, str(c.inp / "outside").encode() + b"\n"),
    "pointer-binary": lambda c: _pointer_run(c, b"\xff\xfe\x00\x81"),
    # --- recipes -----------------------------------------------------------------------------------
    "recipe-alias-bomb": lambda c: _recipe(c, c.w.recipe.read_text() + "description:\n" + ALIAS_BOMB,
                                           subprocess=True),
    "recipe-deep-nesting": lambda c: _recipe(c, "description: " + "[" * 20000 + "]" * 20000 + "\n"),
    "recipe-lr-negative": lambda c: _recipe(c, edit=_set("args.lr", -0.1)),
    "recipe-lr-nan": lambda c: _recipe(c, edit=_set("args.lr", math.nan)),
    "recipe-lr-inf": lambda c: _recipe(c, edit=_set("args.lr", math.inf)),
    "recipe-lr-abc": lambda c: _recipe(c, edit=_set("args.lr", "abc")),
    "recipe-betas-out-of-range": lambda c: _recipe(c, edit=_set("args.betas", [1.5, 0.999])),
    "recipe-betas-one-value": lambda c: _recipe(c, edit=_set("args.betas", [0.9])),
    "recipe-betas-a-string": lambda c: _recipe(c, edit=_set("args.betas", "abc")),
    "recipe-betas-a-mapping": lambda c: _recipe(c, edit=_set("args.betas", {"a": 1})),
    "recipe-lr-true": lambda c: _recipe(c, edit=_set("args.lr", True)),
    "recipe-net-width-400-digits": lambda c: _recipe(c, edit=_set("args.net.width", 10**400)),
    "recipe-weight-decay-negative": lambda c: _recipe(c, edit=_set("args.weight_decay", -0.1)),
    "recipe-weight-decay-nan": lambda c: _recipe(c, edit=_set("args.weight_decay", math.nan)),
    "recipe-net-width-huge": lambda c: _recipe(c, edit=_set("args.net.width", 10**7)),
    "recipe-seed-huge": lambda c: _recipe(c, edit=_set("train.seed", 2**70)),
    "recipe-max-steps-huge": lambda c: _recipe(c, edit=_set("train.max_steps", 10**30), subprocess=True),
    "recipe-batch-size-huge": lambda c: _recipe(c, edit=_set("train.batch_size", 10**9), subprocess=True),
    "recipe-patch-size-huge": lambda c: _recipe(c, edit=_set("data.patch_size", 10**6), subprocess=True),
    "recipe-hu-window-infinite": lambda c: _recipe(c, edit=_set("data.hu_window", [-math.inf, math.inf])),
    "recipe-larger-than-1mb": lambda c: _recipe(c, c.w.recipe.read_text() + ("# padding\n" * 120_000)),
    # --- simulation manifests ----------------------------------------------------------------------
    "manifest-absolute-path": lambda c: _manifest(c, _record("ld", str(c.inp / "elsewhere" / "ld.npy"))),
    "manifest-dotdot-path": lambda c: _manifest(c, _record("ld", "../elsewhere/ld.npy")),
    "manifest-dotdot-normal-dose": lambda c: _manifest(c, lambda m: m.update(normal_dose="../elsewhere/ld.npy")),
    "manifest-path-a-number": lambda c: _manifest(c, _record("nd", 42)),
    "manifest-slice-index-text": lambda c: _manifest(c, _record("slice_index", "abc")),
    "manifest-truncated": lambda c: _manifest(c, raw=(c.w.sim / "manifest.json").read_bytes()[:200]),
    # --- report inputs -----------------------------------------------------------------------------
    "report-summary-truncated": lambda c: _report_eval(c, "summary.json", edit=lambda b: b[: len(b) // 2]),
    "report-summary-rows-not-a-list": lambda c: _report_eval(c, "summary.json",
                                                             edit=_summary(lambda d: d.update(summary="abc"))),
    "report-summary-doses-text": lambda c: _report_eval(c, "summary.json",
                                                        edit=_summary(lambda d: d.update(doses=["abc"]))),
    "report-per-slice-truncated": lambda c: _report_eval(c, "per_slice.csv", edit=lambda b: b[: len(b) * 2 // 3]),
    "report-per-slice-no-method-column": lambda c: _report_eval(c, "per_slice.csv", edit=_csv_drop_column("method")),
    "report-per-slice-nan-dose": lambda c: _report_eval(c, "per_slice.csv",
                                                        edit=lambda b: b.replace(b",0.25,", b",nan,", 1)),
    "report-per-slice-binary": lambda c: _report_eval(c, "per_slice.csv", data=b"\xff\xfe\x00\x81garbage\n"),
    "report-samples-truncated": lambda c: _report_eval(c, "samples.npz", edit=lambda b: b[: len(b) // 2]),
    "report-samples-shapes-differ": lambda c: _report_eval(c, "samples.npz",
                                                           edit=_samples(d0_nd=np.zeros((2, 8, 8), np.int16))),
    "report-run-config-alias-bomb": lambda c: _report_run(c, "config.yaml", ("method: supervised\nargs:\n  net:\n"
                                                                          "    name: dncnn\n    width:\n"
                                                                          + ALIAS_BOMB.replace("  -", "      -")).encode(),
                                                          subprocess=True),
    "report-run-config-not-a-mapping": lambda c: _report_run(c, "config.yaml", b"- a\n- b\n"),
    "report-run-metrics-binary": lambda c: _report_run(c, "logs/csv/metrics.csv", b"\xff\xfe\x00\x81\n"),
    "report-run-pointer-escapes": lambda c: _report_run(c, "checkpoints/best", b"../../../eval\n"),
    # --- read-only output locations ------------------------------------------------------------------
    "readonly-denoise-npy": lambda c: _ro(c, ["denoise", str(c.w.npy), "-m", str(c.w.model), "--device", "cpu",
                                              "-o"], "y.npy"),
    "readonly-denoise-dicom": lambda c: _ro(c, ["denoise", str(c.w.npy), "-m", str(c.w.model), "--device", "cpu",
                                                "-o"], "series"),
    "readonly-denoise-missing-parent": lambda c: _ro(c, ["denoise", str(c.w.npy), "-m", str(c.w.model), "-o"],
                                                     "sub/y.npy"),
    "readonly-convert": lambda c: _ro(c, ["convert", str(c.w.npy)], "y.nii.gz"),
    "readonly-simulate-npy": lambda c: _ro(c, ["simulate", str(c.w.npy), "--dose", "0.25", "--mode", "gaussian",
                                               "--sigma", "10", "--spacing", "0.7", "-o"], "ld.npy"),
    "readonly-simulate-folder": lambda c: _ro(c, ["simulate", str(c.w.npy), "--dose", "0.25", "0.5", "--mode",
                                                  "gaussian", "--sigma", "10", "--spacing", "0.7", "-o"], "sim"),
    "readonly-train": lambda c: _ro(c, ["train", str(c.w.recipe), "--data", str(c.w.sim), "-o"], "run"),
    "readonly-report": lambda c: _ro(c, ["report", str(c.w.eval), "-o"], "r.html"),
}


def _ro(c: Ctx, argv: list[str], name: str) -> Case:
    """``argv`` ending with the output option (or position), the output inside a read-only folder."""
    o = c.ro() / name
    return Case([*argv, str(o)], o, o)


# ------------------------------------------------------------------------------------------------
# harness
def _digest(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _make_readonly(d: Path) -> Callable[[], None]:
    """Make ``d`` unwritable even for root (chmod, then the immutable attribute); returns the undo."""
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o555)
    undo = [lambda: os.chmod(d, 0o755)]
    probe = d / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return lambda: [u() for u in undo]
    probe.unlink()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(d)], capture_output=True, check=False).returncode == 0:
        undo.insert(0, lambda: subprocess.run(["chattr", "-i", str(d)], capture_output=True, check=False))
        try:
            probe.write_text("x")
        except OSError:
            return lambda: [u() for u in undo]
        probe.unlink()
    for u in undo:
        u()
    pytest.skip("cannot make a folder read-only here (root without chattr)")


def _limit_memory() -> None:  # runs in the child: an old memory bomb fails instead of swapping the machine
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _run(case: Case, capsys) -> tuple[int, str]:
    if not case.subprocess:
        code = main(case.argv)
        return code, capsys.readouterr().err
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    try:
        p = subprocess.run([sys.executable, "-m", "ldct", *case.argv], capture_output=True, text=True, timeout=90,
                           env=env, preexec_fn=_limit_memory, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ldct {case.argv[0]} hung (no answer within 90 s)")
    return p.returncode, p.stderr


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, world, tmp_path, capsys):
    undo: list[Callable[[], None]] = []

    def ro() -> Path:
        d = tmp_path / "readonly"
        undo.append(_make_readonly(d))
        return d

    try:
        case = CASES[name](Ctx(world, tmp_path, ro))
        watched = [world.root] + ([tmp_path / "in"] if (tmp_path / "in").is_dir() else [])
        before = _digest(*watched)
        code, err = _run(case, capsys)
        assert "Traceback" not in err, err[-3000:]
        lines = [line for line in err.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ldct: error:")]
        assert code == 2, f"exit {code}: {err[-2000:]}"
        assert len(errors) == 1 and lines[-1] == errors[0], err[-2000:]
        assert str(case.named) in errors[0], errors[0]
        assert _digest(*watched) == before, "an input was modified"
        if case.output is not None:
            assert not case.output.exists(), f"{case.output} was written"
            if case.output.parent.is_dir():
                left = [p.name for p in case.output.parent.iterdir() if p.name.startswith(f".{case.output.name}.")]
                assert not left, left
    finally:
        for u in undo:
            u()


# ------------------------------------------------------------------------------------------------
# the HTML report: labels from DICOM headers cannot break out of the embedded JSON
HOSTILE_LABELS = ["<!--<script>", "</script><script>document.title='pwned'</script>", "a & b > c",
                  "line\u2028separator\u2029end"]


@pytest.fixture(scope="module")
def hostile_report(world, tmp_path_factory) -> tuple[Path, list[str]]:
    from ldct.report.samples import write_samples

    ev = tmp_path_factory.mktemp("hostile_report") / "eval"
    shutil.copytree(world.eval, ev)
    nd = np.random.default_rng(1).normal(40.0, 30.0, (len(HOSTILE_LABELS), 24, 24)).astype(np.float32)
    items = [{"ld": nd[k] + 30, "out": nd[k] + 3, "nd": nd[k], "patient_id": label}
             for k, label in enumerate(HOSTILE_LABELS)]
    write_samples({0.25: items}, ev / "samples.npz", model="<b>model</b>")
    out = ev.parent / "r.html"
    assert main(["report", str(ev), "-o", str(out)]) == 0
    return out, HOSTILE_LABELS


def test_report_json_escapes_markup(hostile_report):
    out, labels = hostile_report
    html = out.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', html, re.DOTALL)
    assert m, "the viewer data element is not closed where it should be"
    payload = m.group(1)
    for ch in "<>&\u2028\u2029":
        assert ch not in payload, f"{ch!r} is not escaped in the embedded JSON"
    data = json.loads(payload)
    assert data["cases"][0]["slice_labels"] == labels
    assert data["cases"][0]["titles"]["output"] == "<b>model</b>"
    assert html.count("<script") == 2  # the data element and the viewer script, nothing injected


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_with_hostile_labels_renders_in_a_browser(hostile_report, tmp_path):
    out, _ = hostile_report
    cmd = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000", "--dump-dom",
           out.resolve().as_uri() + "#slice=1"]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    assert re.search(r'<body[^>]*data-rendered="0:1:soft"', dom), dom[:3000]
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom, re.DOTALL).group(1)
    assert "</script><script>document.title=" in dom.replace("&lt;", "<").replace("&gt;", ">")  # shown as text


def test_legitimate_inputs_next_to_the_corpus_still_work(world, tmp_path, capsys):
    """What the corpus refuses is only the hostile part: a NaN metric (one that could not be measured) is
    shown as a dash, in-folder checkpoint pointers are followed, and the untouched model denoises."""
    ev = tmp_path / "eval"
    shutil.copytree(world.eval, ev)
    text = (ev / "per_slice.csv").read_text().splitlines()
    col = text[0].split(",").index("noise_std_hu")
    text[1] = ",".join("nan" if j == col else v for j, v in enumerate(text[1].split(",")))
    (ev / "per_slice.csv").write_text("\n".join(text) + "\n")
    assert main(["report", str(ev), "-o", str(tmp_path / "eval.html")]) == 0
    assert main(["report", str(world.run), "-o", str(tmp_path / "run.html")]) == 0
    assert "step 1" in (tmp_path / "run.html").read_text()  # the best/last checkpoints' metadata was read
    out = tmp_path / "y.npy"
    assert main(["denoise", str(world.npy), "-o", str(out), "-m", str(world.run), "--device", "cpu"]) == 0
    y = np.load(out)
    assert y.shape == np.load(world.npy).shape and np.isfinite(y).all()
    assert "ldct: error" not in capsys.readouterr().err
