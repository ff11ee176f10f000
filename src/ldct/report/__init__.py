"""The self-contained HTML report (``ldct report``): metric tables, an image viewer, training curves.

:func:`build_report` = :func:`ldct.report.collect.collect` (what a run/evaluation folder holds) +
:func:`ldct.report.html.write_report` (one static HTML file with everything inline).
"""

from __future__ import annotations

from pathlib import Path

from ldct.report.data import Figure, MetricTable, ReportData, ViewerCase


def build_report(source: str | Path, out: str | Path, *, overwrite: bool = False,
                 max_slices: int | None = None) -> Path:
    """Write the HTML report of a run or evaluation folder ``source`` to ``out``; returns ``out``.

    ``max_slices`` caps the viewer's slices per case (file size: ~0.4 MB per 512x512 panel slice).
    """
    from ldct.report.collect import collect
    from ldct.report.html import write_report

    data = collect(source)
    if max_slices is not None:
        for c in data.cases:
            c.panels = {k: v[:max_slices] for k, v in c.panels.items()}
            c.slice_labels, c.slice_notes = c.slice_labels[:max_slices], c.slice_notes[:max_slices]
    return write_report(data, out, overwrite=overwrite)


__all__ = ["Figure", "MetricTable", "ReportData", "ViewerCase", "build_report"]
