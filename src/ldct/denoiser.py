"""``ldct.Denoiser``: the one thing you save, load, export and run.

A denoiser is a network plus what it takes to use it: the input window (HU for CT; intensities
0..full scale for photographs), the output/input size ratio (super-resolution), the input channels (2.5D:
an odd number of neighbouring slices) and whether it needs the dose. Every trained method makes one
(``Method.denoiser()``); training validation, ``ldct evaluate``, ``ldct denoise``, the report and
photographs all run it, and it is what a model file holds::

    from ldct import Denoiser
    from ldct.io import read_volume

    d = Denoiser.load("default")          # a bundled or user model name, a run folder or a model file
    out = d(read_volume("scan/"))         # Volume in, Volume out (HU, same geometry)
    d.save("my_model/")                   # weights.safetensors + meta.json

CT is denoised as a *correction*: the network only sees HU clipped to its window, and
``out = in + (net_to_hu(f(hu_to_net(in))) - clip(in, window))``, so inside the window the output is the
network's and outside it (bone, contrast, metal, air) the part the network never saw is added back. Slices
are streamed in batches (only one batch on the device), optionally in blended tiles (:mod:`ldct.tiling`).
A NaN or infinite network output is refused with one line naming the model: broken weights never become
an image.

Backends: ``"torch"`` (any device) or ``"onnxruntime"`` (CPU; the network exported to ONNX once and cached,
see :mod:`ldct.onnx_export`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ldct.errors import LdctError
from ldct.hu import DEFAULT_NET_WINDOW, Window, hu_to_net, net_to_hu
from ldct.tiling import check_tiling, tiled_forward
from ldct.volume import Volume

PRECISIONS = ("32", "bf16", "16")
BACKENDS = ("torch", "onnxruntime")
#: what ``--backend auto`` picks: ONNX Runtime on the CPU (measured ~2-3x faster than PyTorch on 2 cores,
#: bench/denoise.py), PyTorch on a GPU
AUTO = "auto"
Progress = Callable[[int, int], Any]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a torch device (LdctError when CUDA is asked for but absent)."""
    if isinstance(spec, torch.device):
        return spec
    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise LdctError(f"--device {spec}: no CUDA GPU is available (torch {torch.__version__}, {build})")
        return torch.device(s)
    raise LdctError(f"--device {spec!r}: use auto, cpu or cuda")


def choose_backend(backend: str, device: torch.device) -> str:
    """``auto``: ``onnxruntime`` on the CPU when ONNX Runtime and its exporter are installed, else
    ``torch``."""
    if backend not in (*BACKENDS, AUTO):
        raise LdctError(f"--backend {backend!r}: use auto, {' or '.join(BACKENDS)}")
    if backend != AUTO:
        return backend
    if device.type != "cpu":
        return "torch"
    import importlib.util

    ok = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript"))
    return "onnxruntime" if ok else "torch"


def auto_precision(device: torch.device) -> str:
    """bf16 on a CUDA GPU that has it, else fp16 on CUDA, float32 on the CPU."""
    if device.type != "cuda":
        return "32"
    return "bf16" if torch.cuda.is_bf16_supported() else "16"


def _autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise LdctError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if device.type != "cuda" or precision == "32":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def check_finite_output(y: torch.Tensor, source: str | Path | None, what: str) -> None:
    """Raise :class:`LdctError` (naming the model ``source``) when a network output has a NaN or infinite
    value: the weights are broken or do not suit this input, and nothing is written."""
    if not bool(torch.isfinite(y).all()):
        bad = int((~torch.isfinite(y)).sum())
        raise LdctError(f"the model's output for {what} has {bad} NaN or infinite values (broken weights, or "
                        "a model that does not suit this input); nothing was written", source)


#: the Gaussian (pixels) whose residual is the "fine grain" of :meth:`Denoiser.with_grain`; chosen on the real
#: pairs (docs/model_card.md: 0.7 px kept the full dose's NPS at the highest PSNR of 0.7, 1.0 and 1.5)
GRAIN_SIGMA_PX = 0.7


def _grain_of(meta: Mapping[str, Any]) -> float:
    g = meta.get("grain", 0.0)
    return float(g) if isinstance(g, (int, float)) and not isinstance(g, bool) else 0.0


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, 1, H, W) blurred by a separable Gaussian of ``sigma`` pixels (reflected borders)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    y = F.pad(x, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))


def _find(meta: Mapping[str, Any], key: str) -> Any:
    v = meta.get(key)
    return v.get("name") if isinstance(v, Mapping) else v


class Denoiser:
    """A trained denoising network and how to feed it (see the module docstring).

    Args:
        net: ``forward(x)`` (or ``forward(x, dose)`` when ``dose_conditioned``) on (B, C, h, w) network-range
            tensors -> (B, C', h*scale, w*scale).
        window: HU window mapped to [-1, 1] (photographs: ``Window(0, full_scale)``).
        scale: output/input size ratio; channels: input channels (1, or an odd number of slices: 2.5D).
        dose_conditioned: the network takes the dose fraction (B,) as its second argument.
        data_kind: ``"ct"`` (HU) or ``"photos"`` (intensities 0..``full_scale``).
        name, source, meta: how it is called, where it came from, its metadata (saved with it).
    """

    def __init__(self, net: nn.Module | Any, *, window: Window = DEFAULT_NET_WINDOW, scale: int = 1,
                 channels: int = 1, dose_conditioned: bool = False, data_kind: str = "ct",
                 full_scale: float = 255.0, name: str = "model", source: str | Path | None = None,
                 meta: Mapping[str, Any] | None = None):
        if channels < 1 or channels % 2 == 0:
            raise ValueError(f"channels must be 1 or an odd number of neighbouring slices, got {channels}")
        if data_kind not in ("ct", "photos"):
            raise ValueError(f"data_kind must be 'ct' or 'photos', got {data_kind!r}")
        self.net, self.window, self.scale, self.channels = net, window, int(scale), int(channels)
        self.dose_conditioned, self.data_kind = bool(dose_conditioned), data_kind
        self.full_scale = float(full_scale)
        self.name, self.source, self.meta = name, source, dict(meta or {})
        self.backend = "torch"
        #: share of the network's correction applied to CT: ``out = in + strength * (denoised - in)``
        #: (1 = the network's output; lower keeps some of the input's noise grain, see :meth:`with_strength`)
        self.strength = 1.0
        #: share of the removed noise's fine grain put back (its high-pass part, Gaussian sigma
        #: :data:`GRAIN_SIGMA_PX`), see :meth:`with_grain`; the metadata's ``grain`` (0 = none)
        self.grain = _grain_of(self.meta)
        #: the weights file it was loaded from (None when made in memory)
        self.weights_path: Path | None = None

    # --- what it is -------------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return str(_find(self.meta, "method") or "?")

    @property
    def network(self) -> str:
        return str(_find(self.meta, "network") or getattr(self.net, "ldct_spec", {}).get("name", "?"))

    def describe(self) -> str:
        return f"{self.name} ({self.method}/{self.network})"

    def __repr__(self) -> str:
        return (f"Denoiser({self.describe()}, window={self.window.lo:g}..{self.window.hi:g}, "
                f"scale={self.scale}, channels={self.channels}, dose_conditioned={self.dose_conditioned}, "
                f"backend={self.backend})")

    # --- files ----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | Path | None = None, *, backend: str = "torch", prefer: str = "best") -> Denoiser:
        """A bundled or user model by name (None = ``default``), a run folder (its best checkpoint), a
        checkpoint or model folder, or a ``.safetensors`` file; ``backend="onnxruntime"`` runs the network
        exported to ONNX. Only the denoising network is built: a distillation run needs no teacher on disk."""
        from ldct.model_zoo import find_model
        from ldct.models.files import load_inference_network

        if backend not in BACKENDS:
            raise LdctError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
        found = find_model(None if model is None else str(model))
        path, name = (found.weights, found.name) if not isinstance(found, Path) else (
            found, found.stem if found.is_file() else found.name)
        net, meta, weights_path = load_inference_network(path, prefer=prefer)
        den = cls.from_meta(net, meta, name=name, source=path)
        den.weights_path = weights_path
        return den.use_backend(backend) if backend != "torch" else den

    @classmethod
    def from_meta(cls, net: nn.Module, meta: Mapping[str, Any], *, name: str = "model",
                  source: str | Path | None = None) -> Denoiser:
        """A denoiser around ``net`` with the window, scale, channels, dose need and kind the metadata says."""
        from ldct.model_zoo import data_kind_of, hu_window_of

        kind = data_kind_of(dict(meta))
        full_scale = float(meta.get("full_scale") or (meta.get("data_summary") or {}).get("full_scale") or 255.0)
        window = Window(0.0, full_scale, "net") if kind == "photos" else hu_window_of(dict(meta), source)
        return cls(net, window=window, scale=int(meta.get("scale", 1) or 1), channels=int(meta.get("channels") or 1),
                   dose_conditioned=bool(meta.get("dose_conditioned", False)), data_kind=kind, full_scale=full_scale,
                   name=name, source=source, meta=meta)

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``out_dir/weights.safetensors`` (the network, keys ``<inference_net>.<param>``) and
        ``out_dir/meta.json`` (kind ``ldct-model``) atomically; :meth:`load` reads it back."""
        import json

        from ldct.atomic import atomic_dir
        from ldct.models.files import MODEL_KIND, save_weights

        if self.backend != "torch":
            raise LdctError("save the PyTorch model (this one runs on ONNX Runtime)", self.source)
        net_name = str(self.meta.get("inference_net", "net"))
        spec = dict(getattr(self.net, "ldct_spec", None) or self.meta.get("network") or {})
        if not spec:
            raise LdctError("this network was not built from a spec (ldct.models.specs.build_network): it cannot "
                            "be saved as an ldct model")
        meta = {**self.meta, "kind": MODEL_KIND, "inference_net": net_name, "network": spec,
                "networks": {net_name: spec}, "dose_conditioned": self.dose_conditioned, "scale": self.scale,
                "channels": self.channels, "data_kind": self.data_kind,
                "hu_window": [self.window.lo, self.window.hi]}
        meta.setdefault("format", 1)
        if self.data_kind == "photos":
            meta["full_scale"] = self.full_scale
        if self.weights_path is not None or self.source is not None:
            meta["exported_from"] = str(self.weights_path.parent if self.weights_path is not None else self.source)
        module = getattr(self.net, "module", self.net)
        tensors = {f"{net_name}.{k}": v for k, v in module.state_dict().items()}
        out = Path(out_dir)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            save_weights(tmp / "weights.safetensors", tensors, meta)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        return out

    def install(self, name: str, *, bundled: bool = False, overwrite: bool = False) -> Path:
        """Save under a model name: ``$LDCT_MODEL_DIR/<name>/`` (default ``~/.ldct/models``), or with
        ``bundled`` as ``ldct/weights/<name>.safetensors`` + ``<name>.json`` inside the package (how the
        default model is made). Returns the weights path; ``Denoiser.load(name)`` finds it."""
        import shutil
        import tempfile

        from ldct.atomic import atomic_file
        from ldct.model_zoo import install_target

        weights, meta = install_target(name, bundled=bundled)
        if not bundled:
            weights.parent.parent.mkdir(parents=True, exist_ok=True)
            self.save(weights.parent, overwrite=overwrite)
            return weights
        if not overwrite and (weights.exists() or meta.exists()):
            raise LdctError("bundled model already exists (pass overwrite=True to replace it)", weights)
        weights.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=weights.parent) as tmp:
            self.save(Path(tmp) / "m")
            with atomic_file(weights) as t1, atomic_file(meta) as t2:
                shutil.copyfile(Path(tmp) / "m" / "weights.safetensors", t1)
                shutil.copyfile(Path(tmp) / "m" / "meta.json", t2)
        return weights

    def use_backend(self, backend: str) -> Denoiser:
        """This denoiser on another backend: ``"onnxruntime"`` exports the network to ONNX (cached by the
        weights' hash) and runs it in an ONNX Runtime CPU session."""
        if backend == self.backend:
            return self
        if backend != "onnxruntime":
            raise LdctError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
        from ldct.onnx_export import ort_network

        other = Denoiser(ort_network(self), window=self.window, scale=self.scale, channels=self.channels,
                         dose_conditioned=self.dose_conditioned, data_kind=self.data_kind,
                         full_scale=self.full_scale, name=self.name, source=self.source, meta=self.meta)
        other.backend, other.strength, other.grain = backend, self.strength, self.grain
        return other

    # --- running --------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, dose: torch.Tensor | float | None = None) -> torch.Tensor:
        """The network on a (B, C, h, w) network-range batch (the dose is passed only to a dose-conditioned
        network, as a (B,) tensor) -> (B, C', h*scale, w*scale). No window, no checks: what training
        validation and tiled inference call."""
        if not self.dose_conditioned:
            return self.net(x)
        if dose is None:
            raise LdctError(f"model {self.name} is dose-conditioned: give the dose fraction (e.g. dose=0.25)")
        d = dose if isinstance(dose, torch.Tensor) else torch.full((x.shape[0],), float(dose), device=x.device)
        return self.net(x, d.to(x.device, torch.float32).reshape(-1).expand(x.shape[0]))

    def eval(self) -> Denoiser:
        if hasattr(self.net, "eval"):
            self.net.eval()
        return self

    def _prepare(self, device: str | torch.device, tile: int | None, overlap: int) -> torch.device:
        if tile is not None:
            check_tiling(tile, overlap)
        dev = resolve_device(device)
        if self.backend != "torch" and dev.type != "cpu":
            raise LdctError(f"the {self.backend} backend runs on the CPU; use --backend torch for {dev}")
        if hasattr(self.net, "to"):
            self.net = self.net.to(dev)
        self.eval()
        return dev

    def iter_slices(self, hu: np.ndarray, dose: float | None = None, *, batch_size: int = 4, tile: int | None = None,
                    overlap: int = 32, device: str | torch.device = "cpu", precision: str = "32") -> Iterator[
                        tuple[int, np.ndarray]]:
        """Denoise a (z, y, x) or (y, x) HU array batch by batch (a numpy memmap works: slices are read per
        batch; the input is never written to). Yields ``(first slice index, (b, y*scale, x*scale) float32 HU)``.
        """
        if batch_size < 1:
            raise LdctError(f"--batch-size {batch_size}: must be at least 1")
        arr = hu[None] if hu.ndim == 2 else hu
        if arr.ndim != 3:
            raise LdctError(f"expected a (z, y, x) HU volume, got shape {tuple(hu.shape)}")
        if self.dose_conditioned and dose is None:
            raise LdctError(f"model {self.name} is dose-conditioned: give the dose fraction (e.g. dose=0.25)")
        dev = self._prepare(device, tile, overlap)
        z, c = arr.shape[0], self.channels
        for start in range(0, z, batch_size):
            stop = min(start + batch_size, z)
            ks = np.clip(np.arange(start, stop)[:, None] + np.arange(c) - c // 2, 0, z - 1)  # 2.5D: neighbours
            stack = np.array(arr[ks.ravel()], dtype=np.float32).reshape(stop - start, c, *arr.shape[1:])
            yield start, self._denoise_batch(stack, dose, dev, precision, tile, overlap, f"slices {start}..{stop - 1}")

    def denoise_stack(self, stack: np.ndarray, dose: float | None = None, *, tile: int | None = None,
                      overlap: int = 32, device: str | torch.device = "cpu", precision: str = "32") -> np.ndarray:
        """One (C, h, w) HU input as the network takes it (C = its channels: the slice and its neighbours)
        -> the denoised centre slice, (h*scale, w*scale) float32 HU (how evaluation scores prepared slices)."""
        if stack.ndim != 3 or stack.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, h, w) HU, got shape {tuple(stack.shape)}")
        dev = self._prepare(device, tile, overlap)
        return self._denoise_batch(np.asarray(stack, dtype=np.float32)[None], dose, dev, precision, tile, overlap,
                                   "this slice")[0]

    def _denoise_batch(self, stack: np.ndarray, dose: float | None, dev: torch.device, precision: str,
                       tile: int | None, overlap: int, what: str) -> np.ndarray:
        """(b, C, y, x) HU -> (b, y*scale, x*scale) HU: the network on the window, the rest added back."""
        win, c = self.window, stack.shape[1]
        with torch.inference_mode():
            xs = torch.from_numpy(stack).to(dev)
            if not bool(torch.isfinite(xs).all()):
                raise LdctError(f"input {what} contain NaN or infinite values")
            y = self._run(hu_to_net(xs, win), dose, dev, precision, tile, overlap)
            check_finite_output(y, self.source, what)
            if y.shape[1] > 1:
                y = y[:, y.shape[1] // 2: y.shape[1] // 2 + 1]
            x = xs[:, c // 2: c // 2 + 1]
            excess = x - x.clamp(win.lo, win.hi)
            if self.scale != 1:
                excess = F.interpolate(excess, scale_factor=self.scale, mode="bilinear", align_corners=False)
            if y.shape[-2:] != excess.shape[-2:]:
                raise RuntimeError(f"network output {tuple(y.shape)} does not match the input {tuple(x.shape)} "
                                   f"at scale {self.scale}")
            out = net_to_hu(y, win) + excess
            if self.strength != 1.0 and self.scale == 1:
                out = x + self.strength * (out - x)
            if self.grain and self.scale == 1:
                removed = x - out
                out = out + self.grain * (removed - _gaussian_blur(removed, GRAIN_SIGMA_PX))
            return out[:, 0].float().cpu().numpy()

    def _run(self, x: torch.Tensor, dose: float | None, dev: torch.device, precision: str, tile: int | None,
             overlap: int) -> torch.Tensor:
        def fn(t: torch.Tensor) -> torch.Tensor:
            with _autocast(dev, precision):
                return self.forward(t, dose).float()

        return fn(x) if tile is None else tiled_forward(fn, x, tile=tile, overlap=overlap, scale=self.scale)

    def denoise_array(self, hu: np.ndarray, dose: float | None = None, *, progress: Progress | None = None,
                      **kw: Any) -> np.ndarray:
        """(z, y, x) or (y, x) HU -> float32 HU of shape (z, y*scale, x*scale) (see :meth:`iter_slices`);
        ``progress(done, total)`` after each batch."""
        squeeze = hu.ndim == 2
        arr = hu[None] if squeeze else hu
        z, h, w = arr.shape
        out = np.empty((z, h * self.scale, w * self.scale), dtype=np.float32)
        for start, batch in self.iter_slices(arr, dose, **kw):
            out[start: start + len(batch)] = batch
            if progress is not None:
                progress(start + len(batch), z)
        return out[0] if squeeze else out

    def __call__(self, x: Volume | np.ndarray, dose: float | None = None, *, batch_size: int = 4,
                 tile: int | None = None, overlap: int = 32, device: str | torch.device = "cpu",
                 precision: str = "32", progress: Progress | None = None) -> Volume | np.ndarray:
        """Denoise a :class:`~ldct.volume.Volume` (-> a Volume with the same geometry, finer in-plane for
        super-resolution) or a HU array (-> an array). A dose-conditioned model estimates the dose of a
        Volume when none is given (:meth:`dose_for`)."""
        kw = {"batch_size": batch_size, "tile": tile, "overlap": overlap, "device": device, "precision": precision}
        if isinstance(x, Volume):
            if self.data_kind == "photos" or not x.is_hu:
                raise LdctError(f"model {self.name} denoises {'photographs' if self.data_kind == 'photos' else 'CT'}"
                                "; use Denoiser.photo for images that are not CT in HU")
            used, _ = self.dose_for(x, dose)
            return self.output_volume(x, self.denoise_array(x.data, used, progress=progress, **kw))
        return self.denoise_array(np.asarray(x), dose, progress=progress, **kw)

    def with_strength(self, strength: float) -> Denoiser:
        """The same denoiser applying ``strength`` in (0, 1] of its correction to CT:
        ``out = in + strength * (denoised - in)``. Below 1 part of the input's noise stays, with its grain:
        the texture a reader knows, at less noise reduction (as a scanner's iterative-reconstruction
        percentage). Not for super-resolution models."""
        import copy
        import math

        if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0.0 < strength <= 1.0):
            raise LdctError(f"--strength {strength!r}: must be in (0, 1] (1 = the network's output)")
        if strength != 1.0 and self.scale != 1:
            raise LdctError(f"--strength applies to denoisers, not to the x{self.scale} super-resolution model "
                            f"{self.name}")
        other = copy.copy(self)
        other.strength = float(strength)
        return other

    def with_grain(self, grain: float) -> Denoiser:
        """The same denoiser putting back ``grain`` in [0, 1) of the removed noise's fine grain:
        ``out = denoised + grain * highpass(in - denoised)`` (high-pass = minus a Gaussian blur of
        :data:`GRAIN_SIGMA_PX` pixels). The PSNR-optimal output keeps a coarser noise grain than the scan
        (a smoother, "plastic" look); this restores the scan's grain at a smaller cost in noise than
        :meth:`with_strength` (docs/model_card.md). Saved with the model (metadata ``grain``)."""
        import copy
        import math

        if not (isinstance(grain, (int, float)) and not isinstance(grain, bool) and math.isfinite(grain)
                and 0.0 <= grain < 1.0):
            raise LdctError(f"--grain {grain!r}: must be in [0, 1) (0 = the network's output)")
        if grain and (self.scale != 1 or self.data_kind != "ct"):
            raise LdctError(f"--grain applies to CT denoisers, not to {self.name}"
                            f"{f' (x{self.scale} super-resolution)' if self.scale != 1 else ' (photographs)'}")
        other = copy.copy(self)
        other.grain = float(grain)
        other.meta = {**self.meta, "grain": other.grain}
        return other

    def for_full_scale(self, full_scale: float) -> Denoiser:
        """A photo denoiser for images of another full scale (a 16-bit file: 65535), same network."""
        import copy

        other = copy.copy(self)
        other.full_scale, other.window = float(full_scale), Window(0.0, float(full_scale), "net")
        return other

    def photo(self, img: np.ndarray, *, tile: int | None = None, overlap: int = 32,
              device: str | torch.device = "cpu", precision: str = "32") -> np.ndarray:
        """One (C, H, W) photograph of intensities in [0, full_scale] (C = the network's channels) ->
        float32 (C, H, W) intensities clipped to [0, full_scale] (not rounded)."""
        dev = self._prepare(device, tile, overlap)
        x = hu_to_net(torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None].to(dev), self.window)
        with torch.inference_mode():
            y = self._run(x, None, dev, precision, tile, overlap)
        if y.shape != x.shape:
            raise RuntimeError(f"network output {tuple(y.shape)} does not match its input {tuple(x.shape)}")
        check_finite_output(y, self.source, "this image")
        return np.clip(net_to_hu(y[0], self.window).cpu().numpy(), 0.0, self.full_scale).astype(np.float32)

    # --- around the network -----------------------------------------------------------------------------------
    def dose_for(self, vol: Volume, dose: float | None = None, *, reference_ctdivol: float | None = None,
                 reference_mas: float | None = None, reference_noise_hu: float | None = None) -> tuple[float | None, str]:
        """The dose to give the network for ``vol`` and a sentence saying where it came from: None for a
        model without dose input; ``dose`` when given; else estimated from the DICOM dose tags against a
        reference, or from the image noise against the model's normal-dose training noise
        (:func:`ldct.dose.estimate_dose`)."""
        if not self.dose_conditioned:
            if dose is not None:
                return None, f"--dose {dose:g} ignored: {self.name} is not dose-conditioned"
            return None, f"{self.name} is not dose-conditioned (no dose needed)"
        if dose is not None:
            return dose, f"dose {dose:g} from --dose"
        from ldct.dose import estimate_dose

        ref_noise = reference_noise_hu
        if ref_noise is None and reference_ctdivol is None and reference_mas is None:
            ref_noise = self.meta.get("reference_noise_hu")  # the model's normal-dose training noise, if recorded
        return estimate_dose(vol, reference_ctdivol=reference_ctdivol, reference_mas=reference_mas,
                             reference_noise_hu=None if ref_noise is None else float(ref_noise))

    def output_volume(self, vol: Volume, data: np.ndarray) -> Volume:
        """The denoised Volume: ``vol``'s geometry (a finer in-plane grid for scale > 1), provenance in meta."""
        out = vol.with_data(data, ldct_model=self.name, ldct_method=self.method, ldct_network=self.network)
        if self.scale != 1:
            o = np.asarray(vol.orientation, dtype=np.float64)
            sz, sy, sx = vol.spacing
            s = self.scale  # the first voxel centre moves from half an old pixel to half a new one
            shift = -o[:3] * (sx / 2 - sx / s / 2) - o[3:] * (sy / 2 - sy / s / 2)
            out.spacing = (sz, sy / s, sx / s)
            out.positions = np.asarray(vol.positions) + shift
        return out
