"""NIfTI-1/2 (.nii, .nii.gz) <-> :class:`Volume`.

NIfTI stores voxels as (i, j, k) with a RAS affine; a Volume stores (z, y, x) = (k, j, i) with LPS
geometry. Reading maps the affine to ImageOrientationPatient (row = i axis, column = j axis),
pixel spacing and one position per slice k, keeping the stored slice order; writing inverts this, so
a NIfTI read and written back keeps its affine, and a DICOM series written as NIfTI gets the affine
dcm2niix would give it (for evenly spaced, untilted series).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ldct.atomic import atomic_file
from ldct.errors import LdctError
from ldct.io.geometry import analyse_stack
from ldct.io.limits import check_expansion, check_orientation, check_shape, check_stored
from ldct.volume import Volume

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: str | Path) -> Volume:
    """Read a 3-D NIfTI volume (values taken as HU) -> Volume (z, y, x) with LPS geometry."""
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))  # the header only: sizes are checked before the voxels are read
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise LdctError(f"cannot read NIfTI file (corrupt or truncated?): {text}", path) from None
    _check_header(img, path)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except MemoryError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise LdctError(f"cannot read NIfTI file (corrupt or truncated?): {text}", path) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise LdctError(f"NIfTI image has shape {data.shape}; ldct reads 3-D volumes only", path)
    aff_lps = LPS_FROM_RAS @ np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(aff_lps)):
        raise LdctError("NIfTI affine (sform/qform) holds NaN or Inf: the voxel geometry is undefined", path)
    cols = aff_lps[:3, :3]
    sx, sy, sz = (float(np.linalg.norm(cols[:, i])) for i in range(3))
    if min(sx, sy, sz) <= 0:
        raise LdctError("NIfTI affine has a zero-length axis", path)
    orientation = check_orientation(
        np.concatenate([cols[:, 0] / sx, cols[:, 1] / sy]), "NIfTI affine (i, j axes)", path
    )
    nz = data.shape[2]
    positions = aff_lps[:3, 3][None, :] + np.arange(nz)[:, None] * cols[:, 2][None, :]
    vol_data = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    geo = analyse_stack(positions, orientation)
    zooms = img.header.get_zooms()
    meta = {
        "source_format": "nifti",
        "source_path": str(path),
        "modality": "CT",
        "patient_id": _stem(path),
        "warnings": list(geo.warnings),
        "gantry_tilt_deg": geo.tilt_deg,
        "uneven_spacing": False,
        "slice_thickness": float(zooms[2]) if len(zooms) > 2 else sz,
    }
    return Volume(
        data=vol_data,
        spacing=(sz, sy, sx),
        positions=positions,
        orientation=orientation,
        slice_thickness=meta["slice_thickness"],
        is_hu=True,
        meta=meta,
    )


def _check_header(img, path: Path) -> None:
    """Dimensions, data type and size the header declares, against caps and the file, before reading."""
    dims = [int(d) for d in img.shape]
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims.append(1)
    if len(dims) != 3:
        raise LdctError(f"NIfTI image has shape {tuple(dims)}; ldct reads 3-D volumes only", path)
    dtype = np.dtype(img.get_data_dtype())
    if dtype.kind not in "biuf" or dtype.fields:
        raise LdctError(f"NIfTI voxels of type {dtype} are not real numbers (HU)", path)
    i, j, k = dims
    shown = f"{i} x {j} x {k} {dtype} voxels"
    nbytes = i * j * k * dtype.itemsize
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        check_shape((k, j, i), path, what="NIfTI image", claimed=True)
        check_expansion(nbytes, size, path, f"NIfTI image ({shown})")
    else:
        offset = int(getattr(img.dataobj, "offset", 0) or 0)
        check_stored(offset + nbytes, size, path, f"the NIfTI header ({shown})")
        check_shape((k, j, i), path, what="NIfTI image", claimed=False)


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def nifti_affine(vol: Volume) -> np.ndarray:
    """4x4 RAS affine of ``vol`` for NIfTI (voxel index (i=x, j=y, k=z) -> RAS mm)."""
    return vol.affine_ras()


def write_nifti(vol: Volume, path: str | Path, *, overwrite: bool = False, description: str = "") -> Path:
    """Write ``vol`` as NIfTI with its affine (qform and sform, code 1 = scanner).

    Stored as int16 when every voxel is an integer in the int16 range (lossless), else float32.
    Uneven slice spacing cannot be stored in an affine: the mean slice step is used (see the
    volume's warnings).
    """
    import nibabel as nib

    path = Path(path)
    if vol.channels != 1:
        raise LdctError("NIfTI output needs a single-channel volume (this one is colour)", path)
    data = np.transpose(vol.data, (2, 1, 0))
    if (
        np.all(np.isfinite(data))
        and data.size
        and np.all(data == np.round(data))
        and data.min() >= -32768
        and data.max() <= 32767
    ):
        arr = data.astype(np.int16)
    else:
        arr = data.astype(np.float32)
    aff = nifti_affine(vol)
    img = nib.Nifti1Image(arr, aff)
    cols = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
    if np.allclose(cols.T @ cols, np.eye(3), atol=1e-4):
        img.set_qform(aff, code=1)
    else:  # sheared (gantry tilt): a qform cannot hold it, readers use the exact sform
        img.set_qform(None, code=0)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units(xyz="mm")
    img.header["descrip"] = ("ldct " + description).encode("ascii", "replace")[:79]
    with atomic_file(path, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return path
