"""Low-dose CT simulation at any dose.

Public API::

    simulate_low_dose(hu, dose, *, pixel_spacing_mm, mode="projection", i0=None, sigma_e=sqrt(10),
                      filter="hann", seed=None, geometry=None, device="cpu", ...) -> np.ndarray
    simulate_doses(hu, doses, *, pixel_spacing_mm, ...) -> SimulationResult   # several doses at once
    simulate_volume(vol, doses, *, downsample_factor=1, ...) -> SimulatedScan  # Volume in, Volumes out
    write_simulation(scan, out_dir, *, source) -> Path                          # series + manifest.json
    calibrate_i0(hu (Z,H,W), pixel_spacing_mm, geometry, ...) -> Calibration
    Simulator(config).calibrate(hu (Z,H,W), spacing) / .simulate(slice, doses, spacing, seed, calibration)
    image_noise(x, *, mode="gaussian"|"poisson-gaussian", sigma, gain=0, black=0, seed=None) -> np.ndarray
    downsample(x, factor, method="area"|"bicubic") -> np.ndarray
    FanBeamGeometry, default_geometry(shape, pixel_spacing_mm)
    forward_project, fbp, backproject, filter_sinogram        # torch projector (CPU and GPU)

See docs/simulation.md for the physics, the calibration and the measurements.
"""

from ldct.simulate.calibrate import Calibration, calibrate_i0
from ldct.simulate.geometry import FanBeamGeometry, default_geometry
from ldct.simulate.image_noise import image_noise
from ldct.simulate.pipeline import MODES, SimulationResult, check_dose, simulate_doses, simulate_low_dose
from ldct.simulate.projector import FILTERS, backproject, fbp, filter_sinogram, forward_project
from ldct.simulate.resample import downsample
from ldct.simulate.scan import SimulatedScan, simulate_volume, write_simulation
from ldct.simulate.simulator import Simulator
from ldct.simulate.speed import tune_allocator

__all__ = [
    "FILTERS",
    "MODES",
    "Calibration",
    "FanBeamGeometry",
    "SimulatedScan",
    "SimulationResult",
    "Simulator",
    "backproject",
    "calibrate_i0",
    "check_dose",
    "default_geometry",
    "downsample",
    "fbp",
    "filter_sinogram",
    "forward_project",
    "image_noise",
    "simulate_doses",
    "simulate_low_dose",
    "simulate_volume",
    "tune_allocator",
    "write_simulation",
]
