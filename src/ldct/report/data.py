"""What a report shows, independent of where it came from (a run folder, an evaluation folder)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: viewer panels, in display order, with their default titles
PANELS: dict[str, str] = {"low_dose": "low dose", "output": "output", "normal_dose": "normal dose"}


@dataclass
class MetricTable:
    """A table of numbers; ``rows`` hold strings or floats (floats are formatted by the renderer)."""

    title: str
    columns: list[str]
    rows: list[list[str | float | int | None]]
    note: str = ""
    #: per column: +1 higher is better, -1 lower is better (the best value in each dose group is bold)
    better: dict[str, int] = field(default_factory=dict)
    #: column whose value groups rows (e.g. "dose") for picking the best value
    group_by: str | None = None
    #: rendered folded (``<details>``), for long tables
    collapsed: bool = False


@dataclass
class ViewerCase:
    """Aligned slices to compare: each panel is (z, y, x) HU float32, all of the same shape."""

    name: str
    panels: dict[str, np.ndarray]
    slice_labels: list[str] = field(default_factory=list)
    slice_notes: list[str] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.panels) - set(PANELS)
        if unknown:
            raise ValueError(f"unknown viewer panels {sorted(unknown)}; known: {list(PANELS)}")
        if "output" not in self.panels:
            raise ValueError("a viewer case needs an 'output' panel")
        shapes = {k: np.shape(v) for k, v in self.panels.items()}
        first = next(iter(shapes.values()))
        if len(first) != 3 or any(s != first for s in shapes.values()):
            raise ValueError(f"viewer panels must be (z, y, x) arrays of one shape, got {shapes}")

    @property
    def slices(self) -> int:
        return int(next(iter(self.panels.values())).shape[0])

    @property
    def difference(self) -> tuple[str, str] | None:
        """Which panels the difference image subtracts: output - normal dose, else low dose - output."""
        if "normal_dose" in self.panels:
            return ("output", "normal_dose")
        if "low_dose" in self.panels:
            return ("low_dose", "output")
        return None

    @property
    def residual(self) -> tuple[str, str] | None:
        """What the method removed (low dose - output), shown beside the difference when there is a
        normal dose too: noise only should look like noise, anatomy in it was removed."""
        if "normal_dose" in self.panels and "low_dose" in self.panels and "output" in self.panels:
            return ("low_dose", "output")
        return None


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str = ""


@dataclass
class ReportData:
    title: str
    source: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[MetricTable] = field(default_factory=list)
    cases: list[ViewerCase] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
