"""CT input/output: everything becomes a :class:`ldct.volume.Volume` (float32 HU + geometry + metadata).

Public API::

    read_volume(path, *, series=None, raw_shape=None, raw_dtype="uint16", raw_offset=0.0,
                raw_spacing=None, require_ct=True) -> Volume
    write_volume(vol, path, *, source=None, description="", overwrite=False,
                 window=None, slice_index=None) -> Path
    list_series(path) -> list[SeriesInfo]
    volume_summary(vol) -> dict          # what ``ldct info --json`` prints

See docs/io.md for formats, geometry conventions and warnings.
"""

from ldct.io.dicom_scan import SeriesInfo
from ldct.io.formats import list_series, read_volume, write_volume
from ldct.io.summary import volume_summary

__all__ = ["SeriesInfo", "list_series", "read_volume", "volume_summary", "write_volume"]
