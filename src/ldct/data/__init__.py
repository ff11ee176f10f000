"""Data: find CT, split patients, make (simulated) low-/normal-dose pairs, sample training patches.

- :mod:`ldct.data.config` — the ``data:`` recipe section (validated).
- :mod:`ldct.data.discover` — CT scans in a folder, with patient ids, kernels, dose roles.
- :mod:`ldct.data.split` — patient-level train/val/test splits (``split.json``).
- :mod:`ldct.data.store` — per-slice cache and low dose simulated once per slice.
- :mod:`ldct.data.patches` — body-biased crops, flips and rotations.
- :mod:`ldct.data.datasets` — torch datasets (training patches, whole slices, unpaired patches).
- :mod:`ldct.data.photos` — ``kind: photos``: PNG/JPG photographs with image-domain noise, split by file.
- :mod:`ldct.data.build` — :func:`build_datasets`, from a ``data:`` section to a :class:`DataBundle`.
"""

from ldct.data.build import DataBundle, build_datasets
from ldct.data.config import DataConfig, parse_data_config, validate_data_config
from ldct.data.datasets import PatchDataset, SliceDataset, UnpairedPatchDataset
from ldct.data.discover import Scan, discover
from ldct.data.split import Split, make_split, read_split, write_split

__all__ = [
    "DataBundle", "DataConfig", "PatchDataset", "Scan", "SliceDataset", "Split", "UnpairedPatchDataset",
    "build_datasets", "discover", "make_split", "parse_data_config", "read_split", "validate_data_config",
    "write_split",
]
