"""The file-system boundary: errors for unreadable input, and the output-folder check.

Both error classes are :class:`ValueError` subclasses whose message names the path and what
is wrong with it, so a caller (and the CLI) can report them without a stack trace.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["DataFileError", "OutputPathError", "ensure_writable_dir", "ensure_writable_file"]


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
