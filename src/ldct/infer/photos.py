"""``ldct denoise`` for models trained on photographs (``data.kind: photos``): PNG/JPG in, PNG out.

A photo model's metadata says ``data_kind: photos`` (:func:`ldct.model_zoo.data_kind_of`). Its images are
intensities, not HU: each file is read (``ldct.io.read_volume``: RGB, grey or 16-bit grey; alpha kept
aside), mapped to [-1, 1] by :func:`ldct.data.photos.photo_to_net` with the file's own full scale (255 or
65535), run through the generator whole or in blended tiles (:func:`ldct.tiling.tiled_forward`),
mapped back, clipped, rounded and written as PNG of the input's size and mode (RGB, RGBA, L, LA or
16-bit grey) atomically (:mod:`ldct.atomic`). A 3-channel model takes a grey file as three equal channels
and gives back their mean; a 1-channel model denoises each colour channel on its own.

A CT model given a photograph, or a photo model given CT, is refused by the caller
(:func:`check_model_input`) with one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ldct.atomic import atomic_dir, atomic_file
from ldct.data.photos import PHOTO_SUFFIXES
from ldct.denoiser import Denoiser, auto_precision, resolve_device
from ldct.errors import LdctError
from ldct.tiling import check_tiling


def is_photo_input(path: Path) -> bool:
    """A PNG/JPG file, or a folder whose images are PNG/JPG photographs (and that holds no other files,
    as a DICOM series folder does: hidden files and text files are not counted)."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in PHOTO_SUFFIXES
    if not path.is_dir():
        return path.suffix.lower() in PHOTO_SUFFIXES
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    photos = [p for p in files if p.suffix.lower() in PHOTO_SUFFIXES]
    others = [p for p in files if p.suffix.lower() not in PHOTO_SUFFIXES + (".txt", ".md", ".json", ".csv")]
    return bool(photos) and not others


def check_model_input(model: Any, inp: Path) -> None:
    """One-line :class:`LdctError` when a photo model meets CT or a CT model meets photographs."""
    photo_in = is_photo_input(inp)
    if model.data_kind == "photos" and not photo_in:
        raise LdctError(f"model {model.name} was trained on photographs (data.kind photos) and denoises PNG/JPG "
                        "images; this input is not a photograph or a folder of them (for CT use a CT model)", inp)
    if model.data_kind != "photos" and photo_in:
        raise LdctError(f"this is a photograph, but model {model.name} was trained on CT (Hounsfield units); "
                        "use a model trained on photographs (ldct train pix2pix_photos)", inp)


@dataclass
class PhotoImage:
    """A photograph as read for denoising: (C, H, W) float32 intensities (C = 1 or 3), its full scale
    (255 / 65535) and alpha channel (H, W) or None."""

    data: np.ndarray
    full_scale: float
    alpha: np.ndarray | None


def read_photo_file(path: Path) -> PhotoImage:
    """Read a PNG/JPG for denoising (``ldct.io.read_volume``; alpha re-read with Pillow)."""
    from PIL import Image

    from ldct.data.photos import read_intensities

    img, scale = read_intensities(path)
    if min(img.shape[1:]) < 16:
        raise LdctError(f"image of {img.shape[1]}x{img.shape[2]} pixels is too small to denoise", path)
    alpha = None
    with Image.open(path) as im:
        if "A" in im.getbands():
            alpha = np.asarray(im.getchannel("A"))
    return PhotoImage(img, scale, alpha)


def denoise_image(model: Denoiser, photo: PhotoImage, **kw: Any) -> np.ndarray:
    """(C, H, W) denoised intensities of ``photo`` (same channels) with a photo model; the file's own full
    scale (255 or 65535) sets the intensity window."""
    want = int(model.channels)
    img = photo.data
    den = model.for_full_scale(photo.full_scale)
    if img.shape[0] == want:
        return den.photo(img, **kw)
    if want == 3 and img.shape[0] == 1:  # grey file, colour model: three equal channels in, their mean out
        return den.photo(np.repeat(img, 3, axis=0), **kw).mean(0, keepdims=True)
    if want == 1:  # colour file, grey model: each channel on its own
        return np.concatenate([den.photo(c[None], **kw) for c in img])
    raise LdctError(f"model {model.name} takes {want} channels; this image has {img.shape[0]}")


def to_pil(img: np.ndarray, full_scale: float, alpha: np.ndarray | None = None) -> Any:
    """(C, H, W) intensities -> a Pillow image of the same kind as the input file (rounded, clipped)."""
    from PIL import Image

    dtype = np.uint16 if full_scale > 255 else np.uint8
    arr = np.clip(np.round(img), 0, full_scale).astype(dtype)
    if arr.shape[0] == 1:
        if dtype == np.uint16:
            return Image.fromarray(arr[0])  # 16-bit grey ("I;16")
        if alpha is None:
            return Image.fromarray(arr[0], mode="L")
        return Image.fromarray(np.stack([arr[0], alpha.astype(np.uint8)], -1), mode="LA")
    rgb = np.moveaxis(arr, 0, -1)
    if alpha is not None:
        return Image.fromarray(np.concatenate([rgb, alpha[..., None].astype(np.uint8)], -1), mode="RGBA")
    return Image.fromarray(rgb, mode="RGB")


@dataclass
class PhotoDenoiseResult:
    output: Path
    images: int
    seconds: float
    model: str
    device: str
    sizes: list[tuple[int, int]]
    noise_before: float | None = None
    noise_after: float | None = None
    preview: Path | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def estimate_noise(img: np.ndarray, full_scale: float) -> float:
    """Blind noise std of a (C, H, W) image in 8-bit units (``skimage.restoration.estimate_sigma``: wavelet
    median absolute deviation, averaged over channels)."""
    from skimage.restoration import estimate_sigma

    x = np.asarray(img, dtype=np.float64) * (255.0 / full_scale)
    return float(estimate_sigma(x, channel_axis=0, average_sigmas=True))


def photo_jobs(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    """(input file, output path relative to the output) pairs: one file -> ``out`` itself (a .png);
    a folder -> the same relative paths with the suffix .png."""
    from ldct.data.photos import find_photos

    if inp.is_file():
        if out.suffix.lower() != ".png":
            raise LdctError("the output of a photograph is a .png file (lossless; PNG is what ldct writes)", out)
        return [(inp, Path(out.name))]
    if out.suffix != "":
        raise LdctError("a folder of photographs is written to a folder (give -o a folder name without suffix)",
                        out)
    files = find_photos(inp)
    rel = {k: Path(f"{k}.png") for k in files}
    if len(set(rel.values())) != len(rel):
        raise LdctError("two input files differ only in their suffix (e.g. a.png and a.jpg); both would be "
                        "written as the same .png", inp)
    return [(files[k], rel[k]) for k in files]


def denoise_photos(
    inp: Path,
    out: Path,
    *,
    model: Any,
    device: str = "auto",
    tile: int | None = None,
    overlap: int = 32,
    precision: str = "auto",
    overwrite: bool = False,
    preview: Path | None = None,
    progress: Callable[[int, int], Any] | None = None,
    on_start: Callable[[int], Any] | None = None,
) -> PhotoDenoiseResult:
    """Denoise a PNG/JPG file (-> ``out``.png) or a folder of them (-> folder ``out``, same relative paths,
    .png) with a photo model; everything appears at once (atomic file / folder) or not at all."""
    from ldct.infer.pipeline import check_paths

    inp, out = Path(inp), Path(out)
    check_paths(inp, out, overwrite=overwrite, preview=preview)
    check_model_input(model, inp)
    jobs = photo_jobs(inp, out)
    if preview is not None and preview.suffix.lower() != ".png":
        raise LdctError("--preview must be a .png file", preview)
    if tile is not None:
        check_tiling(tile, overlap)
    dev = resolve_device(device)
    if precision == "auto":
        precision = auto_precision(dev)
    if on_start is not None:
        on_start(len(jobs))
    kw = {"tile": tile, "overlap": overlap, "device": dev, "precision": precision}
    seconds, sizes, before, after = 0.0, [], [], []
    first: tuple[PhotoImage, np.ndarray] | None = None

    def run(write_root: Path, single: bool) -> None:
        nonlocal seconds, first
        for n, (src, rel) in enumerate(jobs):
            photo = read_photo_file(src)
            t0 = time.perf_counter()
            den = denoise_image(model, photo, **kw)
            seconds += time.perf_counter() - t0
            sizes.append((int(den.shape[1]), int(den.shape[2])))
            before.append(estimate_noise(photo.data, photo.full_scale))
            after.append(estimate_noise(den, photo.full_scale))
            if first is None:
                first = (photo, den)
            target = write_root if single else write_root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            to_pil(den, photo.full_scale, photo.alpha).save(target, format="PNG")
            if progress is not None:
                progress(n + 1, len(jobs))

    if inp.is_file():
        with atomic_file(out, overwrite=overwrite) as tmp:
            run(tmp, single=True)
    else:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            run(tmp, single=False)
    if preview is not None and first is not None:
        photo, den = first
        k = 255.0 / photo.full_scale  # 8-bit preview
        a, b = to_pil(photo.data * k, 255.0).convert("RGB"), to_pil(den * k, 255.0).convert("RGB")
        from PIL import Image

        canvas = Image.new("RGB", (a.width + 8 + b.width, a.height), (255, 255, 255))
        canvas.paste(a, (0, 0))
        canvas.paste(b, (a.width + 8, 0))
        with atomic_file(preview, overwrite=overwrite) as tmp:
            canvas.save(tmp, format="PNG")
    return PhotoDenoiseResult(output=out, images=len(jobs), seconds=seconds, model=model.describe(), device=str(dev),
                              sizes=sizes, noise_before=float(np.mean(before)) if before else None,
                              noise_after=float(np.mean(after)) if after else None, preview=preview)
