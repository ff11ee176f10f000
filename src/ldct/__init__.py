"""ldct: low-dose CT denoising toolkit.

Everything in ldct works on :class:`ldct.volume.Volume` objects: float32 voxels in Hounsfield
units (z, y, x) plus geometry and source metadata; a trained model is a :class:`ldct.Denoiser`
(``Denoiser.load("default")(volume) -> Volume``).
"""

__version__ = "0.1.0"

from ldct.errors import LdctError  # noqa: E402
from ldct.volume import Volume  # noqa: E402

__all__ = ["Denoiser", "LdctError", "Volume", "__version__"]


def __getattr__(name: str):  # ``ldct.Denoiser`` without importing torch for ``import ldct``
    if name == "Denoiser":
        from ldct.denoiser import Denoiser

        return Denoiser
    raise AttributeError(f"module 'ldct' has no attribute {name!r}")
