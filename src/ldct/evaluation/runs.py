"""What CT and photo evaluation share: the run a model belongs to, its data section on new data, which
patients (or files) to score, where results go, the name of a model's rows."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldct.errors import LdctError

if TYPE_CHECKING:
    from ldct.data.config import DataConfig
    from ldct.data.split import Split

SPLITS = ("test", "val", "train", "all")


def find_run_dir(path: Path) -> Path | None:
    """The run folder a checkpoint belongs to (None for a lone exported model or weights file)."""
    p = path if path.is_dir() else path.parent
    for cand in (p, p.parent, p.parent.parent):
        if (cand / "checkpoints").is_dir() or (cand / "config.yaml").is_file() and (cand / "split.json").is_file():
            return cand
    return None


def run_data_config(meta: dict[str, Any], data: Path, model_path: Path, **changes: Any) -> DataConfig:
    """The checkpoint recipe's ``data:`` section with ``root = data`` and ``changes``, parsed; a section that no
    longer parses is one error naming the checkpoint."""
    from ldct.data.config import parse_data_config

    section = copy.deepcopy((meta.get("recipe") or {}).get("data") or {})
    section["root"] = str(data.absolute())
    section.update(changes)
    try:
        return parse_data_config(section)
    except LdctError as exc:
        raise LdctError(f"checkpoint's data section: {exc}", model_path) from None


def choose_part(found: list[str], *, split: str, run_dir: Path | None, recipe_split: Any, data: Path,
                noun: str = "patients") -> tuple[list[str], Split | None]:
    """Which of ``found`` (patient or file ids in DATA) to score, and the run's split (None without a
    split.json): ``all`` = every one; otherwise that part of the run's ``split.json`` (or, without one, of
    the split the recipe makes of ``found``), restricted to what DATA holds; none there is an error."""
    from ldct.data.split import make_split, read_split

    run_split = read_split(run_dir) if run_dir is not None and (run_dir / "split.json").is_file() else None
    if split == "all":
        return list(found), run_split
    wanted = getattr(run_split or make_split(found, recipe_split, source=str(data)), split)
    chosen = [k for k in wanted if k in set(found)]
    if not chosen:
        origin = f"{run_dir / 'split.json'}" if run_split else "the recipe's split"
        listing = ", ".join(found[:8]) + (f", ... ({len(found)} in all)" if len(found) > 8 else "")
        raise LdctError(f"none of the {split} {noun} of {origin} ({', '.join(wanted) or 'none'}) are in the data "
                        f"(found: {listing}); use --split all to evaluate every one", data)
    return chosen, run_split


def default_out_dir(out: str | Path | None, run_dir: Path | None, model_path: Path, split: str) -> Path:
    """``out``, else ``RUN_DIR/eval_<split>``; for a lone model (a bundled or installed model, an exported
    folder or a weights file) ``./eval_<model>_<split>``: never beside the weights, which may be read-only or
    inside the installed package."""
    if out:
        return Path(out)
    if run_dir is not None:
        return run_dir / f"eval_{split}"
    stem = model_path.name if model_path.is_dir() else model_path.stem
    return Path.cwd() / f"eval_{stem}_{split}"


def model_name(meta: dict[str, Any]) -> str:
    """``method/network`` of a checkpoint, the name of its rows."""
    return f"{meta.get('method', 'model')}/{(meta.get('network') or {}).get('name', '?')}"
