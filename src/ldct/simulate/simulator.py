"""``Simulator``: a simulator configuration (a recipe's ``data.sim``) and what it does with a scan.

:meth:`Simulator.calibrate` sets the noise level of one scan once (projection mode: the flux I0, and the
FBP filter when ``filter: auto``, fitted to the scan's own noise; image modes: the scan's measured noise),
and :meth:`Simulator.simulate` makes the low dose of one slice at several doses (one projection serves
them all) with that calibration. Caching is the caller's business (``ldct.data.store.SliceStore`` keys its
cache by :attr:`Simulator.fingerprint`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ldct.errors import LdctError


class Simulator:
    """Keyword arguments of :func:`ldct.simulate.simulate_doses` (``geometry`` may be a dict), minus the
    per-slice ones (dose, spacing, seed)."""

    def __init__(self, config: Mapping[str, Any] | None = None):
        self.config = dict(config or {"mode": "projection"})
        self.mode = str(self.config.get("mode", "projection"))
        #: what calibration sets, unless the configuration gives it
        self.level_key = "i0" if self.mode == "projection" else "noise_sigma"

    @property
    def fingerprint(self) -> str:
        """A stable text of the configuration (for cache keys)."""
        return json.dumps(self.config, sort_keys=True, default=str)

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.fingerprint.encode()).hexdigest()[:12]

    @property
    def needs_calibration(self) -> bool:
        return self.config.get(self.level_key) is None

    def kwargs(self) -> dict[str, Any]:
        """The configuration as ``simulate_doses`` keyword arguments (a geometry dict becomes a
        :class:`~ldct.simulate.FanBeamGeometry`)."""
        kw = dict(self.config)
        geometry = kw.pop("geometry", None)
        if isinstance(geometry, dict):
            from ldct.simulate.geometry import FanBeamGeometry

            kw["geometry"] = FanBeamGeometry(**geometry)
        elif geometry is not None:
            kw["geometry"] = geometry
        return kw

    def calibrate(self, hu: np.ndarray, pixel_spacing_mm: float) -> dict[str, Any]:
        """The noise level of one scan ((Z, H, W) HU): ``{"i0": ..., "filter": ...}`` (projection) or
        ``{"noise_sigma": ...}`` (image modes); ``{}`` when the configuration sets it. LdctError when the
        scan gives no usable level (the message says which key to set instead)."""
        if not self.needs_calibration:
            return {}
        kw = self.kwargs()
        try:
            if self.mode == "projection":
                from ldct.simulate.calibrate import calibrate_i0
                from ldct.simulate.geometry import default_geometry

                geom = kw.get("geometry") or default_geometry(hu.shape[1:], pixel_spacing_mm)
                extra = {k: kw[k] for k in ("filter", "view_merge", "variance_downsample", "mu_water") if k in kw}
                calib = calibrate_i0(hu, pixel_spacing_mm, geom, seed=0, device=kw.get("device", "cpu"), **extra)
                out: dict[str, Any] = {"i0": float(calib.i0)}
                if calib.filter:
                    out["filter"] = str(calib.filter)
                return out
            from ldct.simulate.pipeline import simulate_doses

            res = simulate_doses(hu, [0.5], pixel_spacing_mm=pixel_spacing_mm, mode=self.mode, seed=0)
            return {"noise_sigma": float(res.parameters["noise_sigma"])}
        except LdctError as exc:
            raise LdctError(f"cannot set the simulated noise level for this scan: {exc} "
                            f"(set data.sim.{self.level_key})") from None

    def simulate(self, hu: np.ndarray, doses: Sequence[float], pixel_spacing_mm: float, seed: int,
                 calibration: Mapping[str, Any] | None = None) -> dict[float, np.ndarray]:
        """Low dose of one (H, W) HU slice at each of ``doses`` (float32 HU), with the scan's
        ``calibration`` (what :meth:`calibrate` returned)."""
        from ldct.simulate.pipeline import simulate_doses

        kw = {**self.kwargs(), **dict(calibration or {})}
        res = simulate_doses(hu, list(doses), pixel_spacing_mm=float(pixel_spacing_mm), seed=seed, **kw)
        return {d: np.asarray(res.low_dose[d], dtype=np.float32) for d in doses}
