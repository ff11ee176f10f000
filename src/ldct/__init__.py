"""ldct: low-dose CT denoising toolkit.

Everything in ldct works on :class:`ldct.volume.Volume` objects: float32 voxels in Hounsfield
units (z, y, x) plus geometry and source metadata.
"""

__version__ = "0.1.0"

from ldct.errors import LdctError  # noqa: E402
from ldct.volume import Volume  # noqa: E402

__all__ = ["LdctError", "Volume", "__version__"]
