"""What a run trains and is scored on (:class:`DataBundle`), as :func:`ldct.data.build_datasets` and
:func:`ldct.data.photos.build_photo_datasets` return it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ldct.data.config import DataConfig
    from ldct.data.datasets import SliceDataset
    from ldct.data.split import Split
    from ldct.data.store import SliceRecord


@dataclass
class DataBundle:
    """What a run trains and is scored on. ``val``/``test`` are empty datasets when no patient is held out."""

    train: Any
    val: SliceDataset
    test: SliceDataset
    split: dict[str, Any]
    """The patient split as written to split.json ({"train": [...], "val": [...], "test": [...], ...})."""
    summary: dict[str, Any]
    config: DataConfig | None = None
    patient_split: Split | None = None
    records: dict[str, list[SliceRecord]] = field(default_factory=dict, repr=False)
