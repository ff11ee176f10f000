"""The training loop, shared by every method, on Lightning Fabric.

:func:`train` takes a resolved recipe (``ldct.engine.config.load_recipe``) and a data path and runs
``method.training_step`` for ``train.max_steps`` steps on the chosen devices (CPU/CUDA, one process or
DDP across devices and nodes; gloo on CPU, NCCL on GPUs), with periodic validation, checkpoints,
TensorBoard/CSV logs, figures and a progress bar. It stops with :class:`TrainingDiverged` when the loss
becomes NaN/Inf (the last good checkpoint is kept) and with :class:`TrainingInterrupted` after saving a
checkpoint on Ctrl-C/SIGTERM. ``resume=True`` continues from the run's last checkpoint at the same step
with optimizer, scheduler, RNG and data-order state restored.

Multi-process launches: ``devices > 1`` makes Fabric start the other local processes by re-running the
same command line; under ``torchrun`` or SLURM ``srun`` every process is started by the launcher and
Fabric reads the rank from the environment.
"""

from __future__ import annotations

import copy
import math
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ldct.atomic import atomic_file, check_writable
from ldct.engine import checkpoint as ckpt
from ldct.engine import logging as runlog
from ldct.engine.config import dump_recipe, plain, read_yaml, validate_train
from ldct.engine.state import ResumableSampler, capture_rng, gather_rng, restore_rng, sampler_state, seed_all
from ldct.engine.validate import BEST_KEY, validate
from ldct.errors import LdctError
from ldct.hu import DISPLAY_WINDOWS, Window


class TrainingDiverged(LdctError):
    """The loss became NaN or infinite; training stopped without saving the broken weights."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was saved, the run can be resumed."""

    def __init__(self, checkpoint: Path | None, step: int, signum: int):
        self.checkpoint, self.step, self.signum = checkpoint, step, signum
        where = f"checkpoint saved in {checkpoint}" if checkpoint else "no checkpoint saved"
        super().__init__(f"interrupted at step {step}; {where}; continue with --resume")


StepHook = Callable[[int], None]


# ------------------------------------------------------------------------------------------------
def train(
    recipe: Mapping[str, Any],
    *,
    data: str | Path | None,
    out: str | Path,
    max_steps: int | None = None,
    devices: int | str | None = None,
    resume: bool = False,
    accelerator: str | None = None,
    precision: str | None = None,
    init: str | Path | None = None,
    on_step: StepHook | None = None,
    datasets: Any = None,
) -> Path:
    """Train the method of a resolved recipe; returns the run folder.

    Args:
        recipe: resolved recipe (``load_recipe``); ``train.*`` values are overridden by the arguments.
        data: data root (``ldct train --data``); None uses the recipe's ``data.root``.
        out: run folder; must be new or empty unless ``resume``.
        resume: continue from ``out``'s last checkpoint (a fresh run when it has none yet).
        init: start the trained network from this model's weights (``train.init``; a bundled name, run
            folder or model path): fine-tuning. Ignored when resuming from a checkpoint.
        on_step: called on every process after each completed step with the step count.
        datasets: a bundle with ``train``, ``val`` (and ``split``, ``summary``) to use instead of
            ``ldct.data.build_datasets(recipe["data"])`` (library use).
    Raises:
        LdctError: bad recipe/data/run folder; TrainingDiverged: NaN/Inf loss (exit code 2 in the CLI);
        TrainingInterrupted: Ctrl-C/SIGTERM after saving a checkpoint.
    """
    recipe = copy.deepcopy(dict(recipe))
    tcfg = dict(recipe.get("train", {}))
    for key, value in (("max_steps", max_steps), ("devices", devices), ("accelerator", accelerator),
                       ("precision", precision), ("init", None if init is None else str(init))):
        if value is not None:
            tcfg[key] = value
    recipe["train"] = validate_train(tcfg)
    tcfg = recipe["train"]
    run_dir = Path(out).absolute()
    if datasets is None:
        recipe["data"] = dict(recipe.get("data", {}))
        root = data if data is not None else recipe["data"].get("root")
        if root is None:
            raise LdctError("no training data given (use --data DIR)")
        if not Path(root).exists():
            raise LdctError("data not found (no such file or folder)", root)
        recipe["data"]["root"] = str(Path(root).absolute())
    _check_devices(tcfg)
    _check_run_dir(run_dir, resume)
    existed = run_dir.exists()
    fresh = not (existed and any(run_dir.iterdir()))  # nothing of an earlier run is in it

    # DDP on parameters with a size-1 dimension (1-channel input convs): harmless, but printed every step
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    fabric = _make_fabric(tcfg)
    fabric.launch()
    _check_run_dir(run_dir, resume)  # on every process, before anything is written
    if resume:
        _check_same_recipe(run_dir, recipe)
    fabric.barrier()

    if tcfg.get("init"):  # a missing or unreadable model: one line before any data work
        from ldct.model_zoo import find_model

        find_model(str(tcfg["init"]))
    seed = int(tcfg["seed"])
    seed_all(seed)  # identical initial weights on every process
    trainer: _Run | None = None
    try:
        if datasets is None:
            datasets = _build_datasets(fabric, recipe["data"], run_dir, seed)
        from ldct.methods.base import METHODS

        method = METHODS.get(recipe["method"])(**recipe["args"])
        if tcfg.get("init") and not (resume and ckpt.read_pointer(run_dir / "checkpoints", "last")):
            init_from_model(method, tcfg["init"])
        method.setup(fabric)
        trainer = _Run(fabric, method, recipe, datasets, run_dir, on_step)
        return trainer.run(resume)
    except BaseException:
        if fresh and fabric.is_global_zero and (trainer is None or trainer.step == 0):
            _remove_unstarted_run(run_dir, existed)
        raise


def _build_datasets(fabric: Any, data_cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Any:
    """Every process builds the datasets together (``ldct.data`` shares the low-dose simulation work
    between the processes of a DDP run); rank 0 writes ``split.json`` into the run folder."""
    from ldct.data import build_datasets

    rank0 = fabric.is_global_zero
    return build_datasets(dict(data_cfg), run_dir=run_dir if rank0 else None, seed=seed, progress=rank0)


def _check_devices(tcfg: Mapping[str, Any]) -> None:
    acc, prec = tcfg["accelerator"], tcfg["precision"]
    has_cuda = torch.cuda.is_available()
    if acc in ("cuda", "gpu") and not has_cuda:
        raise LdctError(f"train.accelerator={acc}: no CUDA GPU is available (torch {torch.__version__})")
    on_gpu = acc in ("cuda", "gpu") or (acc == "auto" and has_cuda)
    if prec == "16-mixed" and not on_gpu:
        raise LdctError("train.precision=16-mixed needs a GPU; on CPU use 32-true or bf16-mixed")


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise LdctError("run folder exists and is not a folder", run_dir)
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise LdctError("run folder is not empty: pass --resume to continue it, or choose a new --out", run_dir)
    check_writable(run_dir)  # a read-only location: one line before any work


def init_from_model(method: Any, model: str | Path) -> None:
    """Copy a trained model's weights into ``method``'s inference network (fine-tuning start).

    The model (a bundled name, run folder or model path) is loaded and validated like ``--model``; its
    network must be the recipe's (same class and arguments), else :class:`LdctError` says what differs."""
    from ldct.denoiser import Denoiser

    loaded = Denoiser.load(str(model))
    target = method.denoiser().net
    src = loaded.net.state_dict()
    dst = target.state_dict()
    if src.keys() != dst.keys() or any(src[k].shape != dst[k].shape for k in dst):
        want = type(target).__name__
        raise LdctError(
            f"cannot start from {model}: its network ({loaded.network} {loaded.meta.get('network')}) is not the "
            f"recipe's ({want}); use a recipe with the same args.net (for the bundled model: ldct train default)",
            loaded.source)
    target.load_state_dict(src, strict=True)


def _remove_unstarted_run(run_dir: Path, existed: bool) -> None:
    """A run that failed before its first step leaves nothing behind (a retry must not find "not empty")."""
    if ckpt.read_pointer(run_dir / "checkpoints", "last") is not None:
        return
    if not existed:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for p in list(run_dir.iterdir()) if run_dir.is_dir() else []:  # the user's (empty) folder stays
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _check_same_recipe(run_dir: Path, recipe: Mapping[str, Any]) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = read_yaml(saved_path)
    for section in ("method", "args", "data"):
        diff = _first_difference(plain(saved.get(section)), plain(recipe.get(section)), section)
        if diff:
            raise LdctError(
                f"cannot resume with a different recipe: {diff} differs from the run's config.yaml "
                "(only train.* may change on resume; start a new run to change the rest)", saved_path)


def _first_difference(a: Any, b: Any, where: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return None if math.isclose(float(a), float(b), rel_tol=1e-12) else where
    return None if a == b else where


def _make_fabric(tcfg: Mapping[str, Any]) -> Any:
    from lightning.fabric import Fabric

    acc = {"gpu": "cuda"}.get(tcfg["accelerator"], tcfg["accelerator"])
    return Fabric(accelerator=acc, devices=tcfg["devices"], num_nodes=tcfg["num_nodes"],
                  strategy=tcfg["strategy"], precision=tcfg["precision"])


def _ignore_signals(_: int) -> None:
    """DataLoader workers leave Ctrl-C/SIGTERM to the main process (which saves a checkpoint)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ------------------------------------------------------------------------------------------------
class _Run:
    """State of one training run on one process."""

    def __init__(self, fabric: Any, method: Any, recipe: dict[str, Any], data: Any, run_dir: Path,
                 on_step: StepHook | None):
        self.fabric, self.method, self.recipe, self.data = fabric, method, recipe, data
        self.val = data.val if data.val is not None and len(data.val) > 0 else None
        self.run_dir, self.on_step = run_dir, on_step
        self.t = recipe["train"]
        self.rank0 = fabric.is_global_zero
        w = recipe.get("data", {}).get("hu_window", [-1000.0, 1000.0])
        self.window = Window(float(w[0]), float(w[1]), "net")
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best = -math.inf
        self.metrics: dict[str, float] = {}
        self.loggers: list[Any] = []
        self.history_path = run_dir.joinpath(*runlog.CSV_DIR) / "metrics.csv"
        self._stop_signal = 0
        self._last_ckpt: Path | None = None

        n_train = len(data.train)
        bs, world = self.t["batch_size"], fabric.world_size
        if n_train < bs * world:
            raise LdctError(
                f"the training set has {n_train} samples, fewer than one batch ({bs} x {world} processes); "
                "lower train.batch_size or add data")
        self.sampler = ResumableSampler(data.train, num_replicas=world, rank=fabric.global_rank,
                                        seed=int(self.t["seed"]), batch_size=bs)
        workers = int(self.t["num_workers"])
        loader = DataLoader(
            data.train, batch_size=bs, sampler=self.sampler, num_workers=workers, drop_last=True,
            persistent_workers=False,  # workers re-fork each epoch and see set_epoch
            pin_memory=fabric.device.type == "cuda",
            worker_init_fn=_ignore_signals if workers > 0 else None,
            generator=torch.Generator().manual_seed(int(self.t["seed"])),  # keeps the global RNG untouched
        )
        # Not wrapped by fabric.setup_dataloaders: its wrapper re-sets the sampler epoch to the number of
        # iter() calls, which is wrong after a resume. The engine sets the epoch and moves batches itself.
        self.loader = loader

    # -------------------------------------------------------------------------------------------
    def run(self, resume: bool) -> Path:
        self._set_epoch()
        resumed = self._resume() if resume else False
        if self.rank0:
            self._prepare_run_dir(resumed)
        self.fabric.barrier()
        old_handlers = self._install_signal_handlers()
        max_steps = int(self.t["max_steps"])
        patches = self.t["batch_size"] * self.fabric.world_size
        progress = runlog.TrainProgress(max_steps, self.step, self.rank0, patches)
        if resumed:
            progress.note(f"resumed {self.run_dir} at step {self.step}")
        try:
            with progress:
                self._loop(max_steps, progress)
        finally:
            self._restore_signal_handlers(old_handlers)
            if self.rank0:
                for lg in self.loggers:
                    lg.finalize("success")
        return self.run_dir

    def _loop(self, max_steps: int, progress: runlog.TrainProgress) -> None:
        it = iter(self.loader)
        sums: dict[str, float] = {}
        count = 0
        t = self.t
        while self.step < max_steps:
            try:
                batch = next(it)
            except StopIteration:
                self.epoch += 1
                self.batch_in_epoch = 0
                self._set_epoch()
                it = iter(self.loader)
                batch = next(it)
            batch = self.fabric.to_device(batch)
            self.method.train(True)
            out = self.method.training_step(batch, self.step)
            scalars = {k: float(v) for k, v in out.items()}
            loss = scalars.get("loss", math.nan)
            bad, stop = self._agree(not all(math.isfinite(v) for k, v in scalars.items() if k.startswith("loss")))
            if bad:
                self._diverged(scalars)
            self.method.on_step_end(self.step, max_steps)
            self.step += 1
            self.batch_in_epoch += 1
            for k, v in scalars.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if self.step % t["log_every"] == 0 or self.step == max_steps:
                means = {k: v / count for k, v in sums.items()}
                means.update(patches_per_s=progress.rate(self.step), epoch=float(self.epoch))
                self._log(means)
                sums, count = {}, 0
            progress.update(self.step, {"loss": loss})
            final = self.step == max_steps
            improved = False
            if self.val is not None and (t["val_every"] and self.step % t["val_every"] == 0 or final):
                improved = self._validate(progress)
            if self.val is not None and (t["sample_every"] and self.step % t["sample_every"] == 0 or final):
                self._samples()
            periodic = bool(t["ckpt_every"]) and self.step % t["ckpt_every"] == 0
            if periodic or final or stop or improved:
                self._save(best=improved)
            if stop:
                raise TrainingInterrupted(self._last_ckpt, self.step, self._stop_signal or signal.SIGTERM)
            if self.on_step is not None:
                self.on_step(self.step)
        if self.rank0 and self.val is None:
            self._figures()

    # ------------------------------------------------------------------------------------------
    def _agree(self, bad: bool) -> tuple[bool, bool]:
        """(any process saw a bad loss, any process was asked to stop) -- the same on every process."""
        stop = self._stop_signal != 0
        if self.fabric.world_size == 1:
            return bad, stop
        flags = torch.tensor([float(bad), float(stop)], device=self.fabric.device)
        flags = self.fabric.all_reduce(flags, reduce_op="sum")
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def _diverged(self, scalars: Mapping[str, float]) -> None:
        last = ckpt.read_pointer(self.run_dir / "checkpoints", "last")
        shown = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items() if k.startswith("loss"))
        where = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        raise TrainingDiverged(
            f"training stopped: the loss became NaN/Inf at step {self.step + 1} ({shown}); {where}; "
            "try a lower args.lr, train.precision=32-true or a smaller batch", self.run_dir)

    def _log(self, scalars: Mapping[str, float]) -> None:
        if self.rank0:
            for lg in self.loggers:
                lg.log_metrics(dict(scalars), step=self.step)

    def _validate(self, progress: runlog.TrainProgress) -> bool:
        improved = False
        if self.rank0:
            progress.stage(f"validating on {len(self.val)} held-out slices")
            metrics, _ = validate(self.method, self.val, fabric=self.fabric, window=self.window,
                                  input_metrics=not any(k.startswith("val/input_") for k in self.metrics))
            self.metrics.update(metrics)
            self._log(metrics)
            score = metrics.get(BEST_KEY, -math.inf)
            improved = score > self.best
            self.best = max(self.best, score)
            progress.note(
                f"step {self.step}: val PSNR soft tissue {metrics.get(BEST_KEY, math.nan):.2f} dB "
                f"(low dose {self.metrics.get('val/input_psnr_soft_tissue', math.nan):.2f} dB), "
                f"SSIM {metrics.get('val/ssim_soft_tissue', math.nan):.4f}; full window "
                f"{metrics.get('val/psnr_full', math.nan):.2f} dB")
            self._figures()
        flag = torch.tensor([float(improved)], device=self.fabric.device)
        if self.fabric.world_size > 1:
            flag = self.fabric.broadcast(flag, src=0)
        return bool(flag[0] > 0)

    def _samples(self) -> None:
        if self.rank0 and self.t["sample_slices"]:
            _, samples = validate(self.method, self.val, fabric=self.fabric, window=self.window,
                                  max_slices=self.t["sample_slices"], keep_samples=self.t["sample_slices"],
                                  input_metrics=False)
            if samples:
                fig = runlog.sample_figure(samples["ld"], samples["out"], samples["nd"], step=self.step,
                                           window=DISPLAY_WINDOWS["soft"])
                rgb = runlog.render(fig)
                runlog.save_png(rgb, self.run_dir / "figures" / "samples" / f"{ckpt.step_name(self.step)}.png")
                self._tb_image("samples", rgb)
        self.fabric.barrier()

    def _tb_image(self, tag: str, img: Any) -> None:
        for lg in self.loggers:
            if type(lg).__name__ == "TensorBoardLogger":
                lg.experiment.add_image(tag, img, global_step=self.step, dataformats="HWC")
                lg.experiment.flush()

    def _figures(self) -> None:
        """Loss and validation curves as PNG (TensorBoard plots the same scalars itself)."""
        for lg in self.loggers:
            lg.save()
        history = runlog.read_history(self.history_path)
        for name, fig in (("loss", runlog.loss_figure(history)), ("val_metrics", runlog.val_figure(history))):
            if fig is not None:
                runlog.save_png(runlog.render(fig), self.run_dir / "figures" / f"{name}.png")

    # ------------------------------------------------------------------------------------------
    def _train_state(self) -> dict[str, Any]:
        per_rank = gather_rng(capture_rng(), self.fabric)
        m = self.method
        return {
            "format": ckpt.FORMAT,
            "step": self.step,
            "world_size": self.fabric.world_size,
            "optimizers": {k: o.state_dict() for k, o in m.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in m.schedulers.items()},
            "extra": m.extra_state() if hasattr(m, "extra_state") else {},
            "precision": dict(self.fabric.strategy.precision.state_dict()),
            "rng": per_rank,
            "sampler": sampler_state(self.epoch, self.batch_in_epoch),
            "best": self.best,
            "metrics": dict(self.metrics),
        }

    def _save(self, best: bool = False) -> None:
        state = self._train_state()  # collective on every process
        self._last_ckpt = self.run_dir / "checkpoints" / ckpt.step_name(self.step)
        if self.rank0:
            meta = ckpt.make_meta(self.method, self.recipe, step=self.step, metrics=self.metrics,
                                  data_summary=self.data.summary)
            try:
                ckpt.save_checkpoint(self.run_dir, self.method, meta, state)
            except LdctError as exc:  # disk full, quota, permissions: the last good checkpoint stays
                last = ckpt.read_pointer(self.run_dir / "checkpoints", "last")
                kept = f"the last good checkpoint is {last.name}" if last else "no checkpoint was written yet"
                reason = exc.message.removeprefix("could not write output: ")
                raise LdctError(f"could not save the checkpoint of step {self.step}: {reason}; {kept}; "
                                "free some space and continue with --resume", self.run_dir) from exc
            if best:
                ckpt.write_pointer(self.run_dir / "checkpoints", "best", self._last_ckpt.name)
            ckpt.prune_checkpoints(self.run_dir, int(self.t["keep_checkpoints"]))
        self.fabric.barrier()

    def _resume(self) -> bool:
        target = ckpt.read_pointer(self.run_dir / "checkpoints", "last")
        if target is None:
            return False
        from safetensors.torch import load_file

        state = ckpt.load_train_state(target)
        self.method.load_weights(load_file(str(target / "weights.safetensors")), strict=True)
        for k, o in self.method.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.method.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        if state.get("extra") and hasattr(self.method, "load_extra_state"):
            self.method.load_extra_state(state["extra"])
        if state.get("precision"):
            self.fabric.strategy.precision.load_state_dict(state["precision"])
        self.step = int(state["step"])
        self.best = float(state.get("best", -math.inf))
        self.metrics = dict(state.get("metrics", {}))
        rng = state.get("rng") or []
        if int(state.get("world_size", 1)) == self.fabric.world_size and len(rng) == self.fabric.world_size:
            restore_rng(rng[self.fabric.global_rank])
        else:  # another number of processes: continue with fresh, distinct streams
            seed_all(int(self.t["seed"]) + 7919 * self.step + self.fabric.global_rank)
        self.epoch = int(state["sampler"]["epoch"])
        self.batch_in_epoch = int(state["sampler"]["batch_in_epoch"])
        if self.batch_in_epoch >= self.sampler.batches_per_epoch():
            self.epoch += 1
            self.batch_in_epoch = 0
        self._set_epoch()
        self.sampler.skip_batches = self.batch_in_epoch
        if self.rank0:
            ckpt.remove_after(self.run_dir, self.step)
        self._last_ckpt = target
        return True

    def _set_epoch(self) -> None:
        """New data order (sampler) and new random patches (datasets with ``set_epoch``) for the epoch."""
        self.sampler.set_epoch(self.epoch)
        if hasattr(self.data.train, "set_epoch"):
            self.data.train.set_epoch(self.epoch)

    def _prepare_run_dir(self, resumed: bool) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.run_dir / "config.yaml") as tmp:
            tmp.write_text(dump_recipe(self.recipe))
        self.loggers = runlog.make_loggers(self.run_dir, self.step if resumed else None)

    # ------------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal:  # second Ctrl-C: stop now, without a checkpoint
                raise KeyboardInterrupt
            self._stop_signal = signum
            if self.rank0:
                print(f"\nldct: {signal.Signals(signum).name} received: saving a checkpoint after this step "
                      "(press Ctrl-C again to quit without saving)", file=sys.stderr, flush=True)

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        return old

    @staticmethod
    def _restore_signal_handlers(old: Mapping[int, Any]) -> None:
        for sig, h in old.items():
            signal.signal(sig, h)
