"""Atomic writes: every output appears complete or not at all.

Files are written to a temporary sibling and renamed into place; directories (DICOM series, simulate
outputs) are built in a temporary sibling directory and renamed at the end. On any error the partial
output is removed. Inputs are never opened for writing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ldct.errors import LdctError


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise LdctError("output already exists (pass --overwrite to replace it)", path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)


def _os_reason(exc: OSError) -> str:
    """One line saying why a write failed (libraries such as pydicom re-raise with a traceback inside)."""
    if exc.strerror:
        return str(exc.strerror)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _umask_mode(mode: int) -> int:
    """``mode`` with the process umask applied (mkstemp/mkdtemp create 0600/0700 whatever the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@contextlib.contextmanager
def atomic_file(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it to ``path`` when the block succeeds."""
    path = Path(path)
    _check_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _umask_mode(0o666))
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise LdctError(f"could not write output: {_os_reason(exc)}", path) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; move it to ``path`` when the block succeeds.

    With ``overwrite`` an existing ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LdctError("output exists and is not a directory", path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise LdctError("output directory is not empty (pass --overwrite to replace it)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp_path
        os.chmod(tmp_path, _umask_mode(0o777))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp_path, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
    except OSError as exc:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise LdctError(f"could not write output: {_os_reason(exc)}", path) from exc
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise


def is_inside(child: str | Path, parent: str | Path) -> bool:
    """True when ``child`` is ``parent`` or lies inside it (after resolving links)."""
    c, p = Path(child).resolve(), Path(parent).resolve()
    return c == p or p in c.parents
