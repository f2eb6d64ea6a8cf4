"""The file-system boundary: errors for unreadable input, the output-folder check, and
atomic writes.

Both error classes are :class:`ValueError` subclasses whose message names the path and what
is wrong with it, so a caller (and the CLI) can report them without a stack trace.
:func:`atomic_write` writes a file all at once (a temporary file beside it, fsynced and
renamed), so a reader never sees half a file and concurrent writers never share one.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

__all__ = ["DataFileError", "OutputPathError", "ensure_writable_dir", "ensure_writable_file",
           "atomic_write", "remove_stale_tmp"]

#: a temporary file whose writer cannot be checked for liveness is stale after this long
_STALE_TMP_SECONDS = 3600.0


class DataFileError(ValueError):
    """A data file or folder that cannot be read, or does not hold a dataset."""


class OutputPathError(ValueError):
    """An output folder or file that cannot be created or written."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def ensure_writable_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """Create folder ``path`` (and its parents) and check that files can be written in it.

    A probe file is written and removed, so a read-only location or a path under a regular
    file fails here, before any work is done, rather than after it.

    Raises
    ------
    OutputPathError
        Naming ``path`` and the reason (a file in the way, no permission, ...).

    Example
    -------
    >>> import tempfile
    >>> ensure_writable_dir(Path(tempfile.mkdtemp()) / "run").is_dir()
    True
    """
    p = Path(path)
    for parent in (p, *p.parents):  # the nearest existing ancestor must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                why = ("it exists and is not a folder" if parent == p
                       else f"{parent} is a file, not a folder")
                raise OutputPathError(f"{what} {p} cannot be created: {why}; "
                                      "choose another path")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"{what} {p} cannot be created: {_reason(exc)}; "
                              "choose another path") from exc
    probe = p / f".calix-write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"{what} {p} is not writable: {_reason(exc)}; "
                              "choose another path") from exc
    return p


def ensure_writable_file(path: str | Path, *, what: str = "output file") -> Path:
    """Check that file ``path`` can be written: not a folder, its folder created and writable.

    Raises
    ------
    OutputPathError
        Naming ``path`` and the reason.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{what} {p} is a folder; give a file name such as "
                              f"{p / 'report.html'}")
    ensure_writable_dir(p.parent, what=f"folder of the {what}")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"{what} {p} is not writable; choose another path")
    return p


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` all at once: ``write(f)`` fills a temporary file beside it, which is
    fsynced and renamed over ``path`` (and the folder fsynced, where supported).

    The temporary file is named ``<name>~<host>~<pid>~<random>.tmp``, so concurrent writers
    never share one; it is removed if ``write`` fails or is interrupted, and temporary files
    of ``path``'s folder left by killed processes are removed first (see
    :func:`remove_stale_tmp`). The file is created with mode ``0o666`` less the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path.parent)
    tmp = path.with_name(f"{path.name}~{_tmp_tag()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def remove_stale_tmp(folder: str | Path, *, max_age: float = _STALE_TMP_SECONDS) -> list[Path]:
    """Remove the temporary files (``*.tmp``) of :func:`atomic_write` in ``folder`` whose writer
    is gone: a process of this host that no longer runs, or any file older than ``max_age``
    seconds. Returns the removed paths."""
    removed = []
    host, now = socket.gethostname(), time.time()
    for f in Path(folder).glob("*.tmp"):
        parts = f.name[:-len(".tmp")].split("~")
        dead = False
        if len(parts) == 4 and parts[1] == host and parts[2].isdigit():
            dead = not _pid_alive(int(parts[2]))
        try:
            if dead or now - f.stat().st_mtime > max_age:
                f.unlink()
                removed.append(f)
        except OSError:
            pass  # removed by another process meanwhile, or not ours to remove
    return removed


def _tmp_tag() -> str:
    return f"{socket.gethostname()}~{os.getpid()}~{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate it on Windows: rely on the age
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # folders cannot be opened on Windows
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported by this filesystem
    finally:
        os.close(fd)
