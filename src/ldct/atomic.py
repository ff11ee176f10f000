"""Atomic writes: every output appears complete or not at all.

Files are written to a temporary sibling and renamed into place; directories (DICOM series, simulate
outputs) are built in a temporary sibling directory and renamed at the end. On any error the partial
output is removed. Inputs are never opened for writing.

Replacing an existing directory (``--overwrite``) swaps old and new in one step on Linux
(``renameat2(RENAME_EXCHANGE)``), so at no moment is the target missing. Elsewhere it takes two renames; a
run killed between them leaves the old output as ``.NAME.old``, which the next write to NAME puts back
before doing anything. Temporary siblings carry the writer's host and process id
(``.NAME.ldct-<host>-<pid>.*.tmp``): the first write of a process into a folder removes those of this host
whose process is gone, so a killed run leaves no debris for long.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ldct.errors import LdctError

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
#: temporaries are ``.NAME.ldct-<host>-<pid>.<random>.tmp[...]``: the writer is named unambiguously
_STALE = re.compile(rf"^\..+\.ldct-{_HOST}-(\d+)\.[^.]*\.tmp")
_cleaned: set[Path] = set()


def tmp_prefix(path: Path) -> str:
    """Name prefix of ldct's temporaries for ``path`` (writer's host and pid: see the module docstring)."""
    return f".{path.name}.ldct-{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _clean_folder(parent: Path) -> None:
    """Remove the temporaries that writers on this host left in ``parent`` when they were killed (their
    process is gone). Once per folder and process: writers of many files into one folder pay one listing.
    Other hosts' temporaries (a shared file system) are never touched."""
    key = parent.resolve() if parent.exists() else parent
    if key in _cleaned or not parent.is_dir():
        return
    _cleaned.add(key)
    try:
        siblings = list(parent.iterdir())
    except OSError:
        return
    for p in siblings:
        m = _STALE.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _restore_old(path: Path) -> None:
    """A fallback overwrite killed between its two renames left only ``.NAME.old``: put it back."""
    old = path.parent / f".{path.name}.old"
    if old.is_dir() and not path.exists():
        os.replace(old, path)
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # file system without exchange support
        return False
    raise OSError(err, os.strerror(err), str(b))


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise LdctError("output already exists (pass --overwrite to replace it)", path)
    if not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only location: one line, not a traceback
            raise LdctError(f"could not write output: {_os_reason(exc)}", path) from None


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
    _clean_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path), suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    except OSError as exc:
        raise LdctError(f"could not write output: {_os_reason(exc)}", path) from None
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
    if path.parent.is_dir():
        _restore_old(path)
        _clean_folder(path.parent)
    if path.exists() and not path.is_dir():
        raise LdctError("output exists and is not a directory", path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise LdctError("output directory is not empty (pass --overwrite to replace it)", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = Path(tempfile.mkdtemp(prefix=tmp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise LdctError(f"could not write output: {_os_reason(exc)}", path) from None
    try:
        yield tmp_path
        os.chmod(tmp_path, _umask_mode(0o777))
        if path.exists():
            if _exchange(tmp_path, path):  # new in place, old now at tmp_path
                shutil.rmtree(tmp_path, ignore_errors=True)
            else:
                old = path.with_name(f".{path.name}.old")
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


def check_writable(path: str | Path) -> None:
    """Raise :class:`LdctError` naming ``path`` when that folder (existing or to be created) cannot be written:
    a temporary folder is made and removed at once in it or its nearest existing parent."""
    path = Path(path)
    base = next(p for p in (path, *path.parents) if p.exists())
    if not base.is_dir():
        raise LdctError(f"{base} is not a folder", path)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=tmp_prefix(path), suffix=".tmp", dir=base))
    except OSError as exc:
        raise LdctError(f"could not write output: {_os_reason(exc)}", path) from None


def is_inside(child: str | Path, parent: str | Path) -> bool:
    """True when ``child`` is ``parent`` or lies inside it (after resolving links)."""
    c, p = Path(child).resolve(), Path(parent).resolve()
    return c == p or p in c.parents
