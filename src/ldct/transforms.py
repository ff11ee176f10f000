"""Dictionary transforms for MONAI and plain PyTorch pipelines: low-dose simulation and denoising as steps.

They follow MONAI's dictionary-transform conventions (``keys``, ``allow_missing_keys``, the data dict
returned with the keys replaced, or written to ``output_keys``) and work in a ``monai.transforms.Compose``
as in any plain function pipeline; MONAI is not needed to use them (``pip install ldct[monai]`` for
MONAI itself).

Images are channel-first HU arrays or tensors, as MONAI's ``LoadImaged`` + ``EnsureChannelFirstd`` give:
``(1, H, W)`` for a slice, ``(1, H, W, D)`` for a volume (slices along the last axis), or a
``(H, W)``/``(Z, H, W)`` array without a channel. A MONAI ``MetaTensor`` keeps its metadata (affine,
filename ...) and gains ``ldct_dose`` (and ``ldct_model``); its pixel spacing is read from its affine.

    from monai.transforms import Compose, LoadImaged, EnsureChannelFirstd, CopyItemsd
    from ldct.transforms import SimulateLowDosed, Denoised
    pipeline = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), CopyItemsd("image", names="target"),
                        SimulateLowDosed("image", dose=0.25), Denoised("image", output_keys="denoised")])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ldct.errors import LdctError


def _as_keys(keys: Hashable | Sequence[Hashable] | None) -> list[Hashable]:
    if keys is None:
        return []
    return [keys] if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence) else list(keys)


class _DictTransform:
    """MONAI's MapTransform conventions, without depending on MONAI."""

    def __init__(self, keys: Hashable | Sequence[Hashable], allow_missing_keys: bool = False,
                 output_keys: Hashable | Sequence[Hashable] | None = None):
        self.keys = _as_keys(keys)
        if not self.keys:
            raise LdctError("give at least one key")
        self.output_keys = _as_keys(output_keys) or list(self.keys)
        if len(self.output_keys) != len(self.keys):
            raise LdctError(f"output_keys must match keys one to one ({len(self.output_keys)} vs {len(self.keys)})")
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in zip(self.keys, self.output_keys, strict=True):
            if key not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"key {key!r} is not in the data (set allow_missing_keys=True to skip it)")
            d[out_key] = self._apply(d[key])
        return d

    def _apply(self, img: Any) -> Any:  # pragma: no cover - subclasses
        raise NotImplementedError


def _to_stack(img: Any) -> tuple[np.ndarray, str]:
    """(Z, H, W) float32 HU and the layout to restore: 'chw' (1, H, W), 'chwd' (1, H, W, D), 'hw', 'zhw'."""
    a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        return a[None], "hw"
    if a.ndim == 3 and a.shape[0] == 1:
        return a, "chw"
    if a.ndim == 3:
        return a, "zhw"
    if a.ndim == 4 and a.shape[0] == 1:
        return np.moveaxis(a[0], -1, 0), "chwd"
    raise LdctError(f"expected a CT slice or volume in HU ((1, H, W), (1, H, W, D), (H, W) or (Z, H, W)), got "
                    f"shape {tuple(a.shape)} (multi-channel images are not CT)")


def _from_stack(stack: np.ndarray, layout: str, like: Any, extra_meta: dict[str, Any]) -> Any:
    out = {"hw": stack[0], "chw": stack, "zhw": stack, "chwd": np.moveaxis(stack, 0, -1)[None]}[layout]
    out = np.ascontiguousarray(out, dtype=np.float32)
    if not isinstance(like, torch.Tensor):
        return out
    t = torch.as_tensor(out, device=like.device)
    meta = getattr(like, "meta", None)
    if meta is not None:  # a MONAI MetaTensor: keep its metadata and history
        from monai.data import MetaTensor

        return MetaTensor(t, meta={**dict(meta), **extra_meta},
                          applied_operations=list(getattr(like, "applied_operations", [])))
    return t


def _spacing(img: Any, given: float | None) -> float:
    if given is not None:
        return float(given)
    affine = getattr(img, "affine", None)
    if affine is not None:
        a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
        return float(np.mean(np.linalg.norm(a[:3, :2], axis=0)))
    raise LdctError("the pixel spacing is not known: give pixel_spacing_mm= (or load with MONAI: its affine has it)")


class SimulateLowDosed(_DictTransform):
    """Replace each key's normal-dose HU image by a simulated low dose at ``dose`` (ldct's simulator:
    projection domain, Poisson + electronic noise, calibrated to the image's own noise; or
    ``mode="gaussian"``). ``seed`` fixes the noise (None: new noise each call, as a random augmentation);
    ``pixel_spacing_mm`` defaults to a MetaTensor's affine."""

    def __init__(self, keys: Hashable | Sequence[Hashable], dose: float = 0.25, *, mode: str = "projection",
                 pixel_spacing_mm: float | None = None, seed: int | None = None, allow_missing_keys: bool = False,
                 output_keys: Hashable | Sequence[Hashable] | None = None, **sim: Any):
        super().__init__(keys, allow_missing_keys, output_keys)
        from ldct.simulate import Simulator, check_dose

        check_dose(dose)
        self.dose, self.seed, self.spacing = float(dose), seed, pixel_spacing_mm
        self.simulator = Simulator({"mode": mode, **({"filter": "auto"} if mode == "projection" else {}), **sim})
        self._rng = np.random.default_rng(seed)

    def _apply(self, img: Any) -> Any:
        stack, layout = _to_stack(img)
        spacing = _spacing(img, self.spacing)
        calib = self.simulator.calibrate(stack, spacing)
        seeds = self._rng.integers(0, 2**31 - 1, len(stack))
        low = np.stack([self.simulator.simulate(s, [self.dose], spacing, int(k), calib)[self.dose]
                        for s, k in zip(stack, seeds, strict=True)])
        return _from_stack(low, layout, img, {"ldct_dose": self.dose})


class Denoised(_DictTransform):
    """Replace each key's low-dose HU image by its denoised version (an :class:`ldct.Denoiser`, or a model
    name/path loaded once; ``dose`` for dose-conditioned models; ``device``)."""

    def __init__(self, keys: Hashable | Sequence[Hashable], model: Any = "default", *, dose: float | None = None,
                 device: str = "cpu", batch_size: int = 4, allow_missing_keys: bool = False,
                 output_keys: Hashable | Sequence[Hashable] | None = None):
        super().__init__(keys, allow_missing_keys, output_keys)
        from ldct.denoiser import Denoiser

        self.denoiser = model if isinstance(model, Denoiser) else Denoiser.load(model)
        if self.denoiser.scale != 1 or self.denoiser.data_kind != "ct":
            raise LdctError(f"Denoised takes a CT denoiser, not {self.denoiser.describe()}")
        self.dose, self.device, self.batch_size = dose, device, batch_size

    def _apply(self, img: Any) -> Any:
        stack, layout = _to_stack(img)
        dose = self.dose
        if dose is None and getattr(img, "meta", None) is not None:
            dose = img.meta.get("ldct_dose")
        out = self.denoiser.denoise_array(stack, dose if self.denoiser.dose_conditioned else None,
                                          device=self.device, batch_size=self.batch_size)
        return _from_stack(out, layout, img, {"ldct_model": self.denoiser.name})
